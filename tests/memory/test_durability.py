"""kill -9 of the memory service during a stream of writes loses no acknowledged write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from bionic_common.clients import MemoryClient
from bionic_common.memory_types import Role, Scope
from tests.memory.server import MemoryProcess

DIM = 8
WRITERS = 4
KILL_AFTER = 200  # acknowledged writes


def vec(i: int) -> list[float]:
    return [1.0, float(i % 97), float(i % 13), 0.5, 0.0, 1.0, 0.0, float(i % 5)]


async def write_until_killed(process: MemoryProcess) -> dict[str, str]:
    """Writers stream Remember calls; once KILL_AFTER are acknowledged the process is
    killed mid-stream. Returns every acknowledged write: id -> text."""
    acknowledged: dict[str, str] = {}
    enough = asyncio.Event()
    client = MemoryClient(process.target)

    async def writer(w: int) -> None:
        scope = Scope("durable", f"user-{w}")
        i = 0
        while True:
            text = f"writer {w} message {i}"
            try:
                memory, _ = await client.remember(scope, Role.USER, text, vec(i), timeout=3)
            except grpc.aio.AioRpcError:
                return  # the service is gone
            acknowledged[memory.id] = text
            if len(acknowledged) >= KILL_AFTER:
                enough.set()
            i += 1

    writers = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
    await enough.wait()
    process.kill()
    await asyncio.gather(*writers)
    await client.close()
    return acknowledged


async def read_back(process: MemoryProcess, ids: list[str]) -> dict[str, str]:
    client = MemoryClient(process.target)
    found = {}
    try:
        for w in range(WRITERS):
            scope = Scope("durable", f"user-{w}")
            token = ""
            while True:
                page, token = await client.list_page(scope, 500, token, timeout=10)
                found.update((m.id, m.text) for m in page)
                if not token:
                    break
    finally:
        await client.close()
    return {i: found[i] for i in ids if i in found}


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    process = MemoryProcess(tmp_path, DIM).start()
    try:
        acknowledged = asyncio.run(write_until_killed(process))
    finally:
        process.stop()
    assert len(acknowledged) >= KILL_AFTER
    restarted = MemoryProcess(tmp_path, DIM).start()
    try:
        survived = asyncio.run(read_back(restarted, list(acknowledged)))
    finally:
        restarted.stop()
    assert survived == acknowledged
