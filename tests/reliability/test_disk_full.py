"""The memory service's data folder on a small tmpfs, filled up during chat load: writes
are refused with RESOURCE_EXHAUSTED naming disk space, chat goes on degraded, the service
stays up; once the filler is deleted writes succeed again without a restart, everything
stored before is intact, and the turns answered meanwhile are stored by the worker."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from bionic_common.clients import MemoryClient, is_disk_full
from bionic_common.memory_types import Role, Scope
from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.reliability.load import LoadResult, assert_stored, run_users
from tests.support.recording_upstream import RecordingUpstream
from tests.support.stack import (
    gateway_url,
    list_memories,
    running_stack,
    stack_settings,
    tenant_of,
)

log = logging.getLogger(__name__)

TMPFS_SIZE = "128m"  # the engine's files take ~16 MiB; it refuses writes under 64 MiB free
KEY = "sk-disk-full"
DIM = 384


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, recorder: RecordingUpstream
) -> Iterator[tuple[LauncherSettings, Stack]]:
    data = tmp_path_factory.mktemp("disk-full")
    memory = data / "memory"  # the memory service's folder in the launcher's plan
    memory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(memory)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the memory folder: {mounted.stderr.strip()}")
    try:
        with running_stack(stack_settings(data, recorder.base_url)) as running:
            yield running.settings, running
    finally:
        subprocess.run(["umount", str(memory)], check=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the disk is full."""
    filler = folder / "filler"
    block = b"\0" * (1 << 20)
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError:
            pass  # ENOSPC: full, which is the point
    return filler


def remember(settings: LauncherSettings, user: str, text: str) -> None:
    """Store a memory straight through the memory service's gRPC API."""

    async def call() -> None:
        client = MemoryClient(f"{settings.host}:{settings.memory_port}")
        try:
            scope = Scope(tenant=tenant_of(settings, KEY), user=user)
            await client.remember(scope, Role.USER, text, [1.0] + [0.0] * (DIM - 1), timeout=10)
        finally:
            await client.close()

    asyncio.run(call())


def snapshot(settings: LauncherSettings, users: list[str]) -> dict[str, tuple[Role, str]]:
    """Every memory of the users: id -> (role, text)."""
    return {m.id: (m.role, m.text) for u in users for m in list_memories(settings, KEY, u)}


def chat(settings: LauncherSettings, users: list[str], turns: int) -> LoadResult:
    result = asyncio.run(run_users(gateway_url(settings), KEY, users, turns))
    assert result.errors == []
    return result


def disk_full_under_load(
    settings: LauncherSettings, running: Stack, users: int, turns: int
) -> None:
    names = [f"disk-u{i}" for i in range(users)]
    before = chat(settings, names, 2)
    assert_stored(settings, KEY, before)
    kept = snapshot(settings, names)
    pid = running.pid("memory")
    filler = fill(Path(settings.data_dir, "memory"))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            remember(settings, names[0], "written while the disk is full")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert is_disk_full(refused.value)
        assert "disk space" in (refused.value.details() or "")
        rest = httpx.post(
            f"{gateway_url(settings)}/memories",
            json={"text": "added while the disk is full", "user": names[0]},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=30,
        )
        during = chat(settings, names, turns)  # answered, without memory
        log.info(
            "disk full: REST add answered %d %s; %d chat turns answered, memory %s",
            rest.status_code, rest.text, during.turns, dict(during.memory),
        )  # fmt: skip
        assert rest.status_code == 507 and "disk space" in rest.json()["error"]["message"]
        assert during.memory == {"degraded": users * turns}
        assert running.pid("memory") == pid  # still up, not restarted
    finally:
        filler.unlink()
    remember(settings, names[0], "written once there is space again")
    after = chat(settings, names, 1)
    assert after.memory["recalled"] == users
    assert running.pid("memory") == pid
    now = snapshot(settings, names)
    assert {i: now.get(i) for i in kept} == kept  # everything stored before is intact
    assert_stored(settings, KEY, during, timeout=180)  # the worker retried the queued turns


def test_disk_full_refuses_writes_cleanly_and_recovers(
    stack: tuple[LauncherSettings, Stack],
) -> None:
    settings, running = stack
    disk_full_under_load(settings, running, users=3, turns=2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_disk_full_under_heavier_load(stack: tuple[LauncherSettings, Stack]) -> None:
    settings, running = stack
    disk_full_under_load(settings, running, users=12, turns=10)
