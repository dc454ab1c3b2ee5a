"""One of two embedder replicas killed with -9 during chat load: the gateway's channel
retries on the other replica, no chat fails, and every acknowledged user message is
stored (a turn that waited too long for memory goes on degraded, its message queued)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.reliability.load import LoadResult, assert_stored, run_users
from tests.support.ports import free_port_run
from tests.support.recording_upstream import RecordingUpstream
from tests.support.stack import gateway_url, running_stack, stack_settings, wait_for

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, recorder: RecordingUpstream
) -> Iterator[tuple[LauncherSettings, Stack]]:
    settings = stack_settings(tmp_path_factory.mktemp("replicas"), recorder.base_url)
    settings = settings.model_copy(
        update={"embedder_replicas": 2, "embedder_port": free_port_run(2)}
    )
    with running_stack(settings) as running:
        yield settings, running


def kill_a_replica_mid_load(
    settings: LauncherSettings, running: Stack, key: str, users: int, turns_after: int
) -> tuple[LoadResult, Counter[str]]:
    """Users chat all along; once each has done two turns, embedder-1 gets SIGKILL and
    the users go on for `turns_after` turns each. Returns the load and the memory outcome
    (x-bionic-memory) of the turns after the kill."""
    names = [f"{key}-u{i}" for i in range(users)]
    result = LoadResult()
    done = threading.Event()
    load = threading.Thread(
        target=lambda: asyncio.run(
            run_users(gateway_url(settings), key, names, 0, result, until=done)
        )
    )
    load.start()
    try:
        wait_for(lambda: result.turns >= 2 * users or not load.is_alive(), timeout=120)
        before = dict(result.memory)  # a copy in one step: the load thread writes to it
        killed_at = result.turns
        running.stop_service("embedder-1", kill=True)
        wait_for(
            lambda: result.turns >= killed_at + turns_after * users or not load.is_alive(),
            timeout=600,
        )
    finally:
        done.set()
        load.join(60)
    after = Counter(result.memory)
    after.subtract(before)
    log.info(
        "embedder-1 killed after %d turns (memory before: %s); %d turns in all, %d errors;"
        " memory of the turns from the kill on: %s",
        killed_at, before, result.turns, len(result.errors), dict(after),
    )  # fmt: skip
    return result, after


def test_one_of_two_embedders_killed_fails_no_chat(stack: tuple[LauncherSettings, Stack]) -> None:
    settings, running = stack
    result, after = kill_a_replica_mid_load(settings, running, "sk-replica", 6, turns_after=4)
    assert result.errors == []
    assert after["recalled"] > 0  # memory works on the surviving replica
    assert_stored(settings, "sk-replica", result, timeout=120)
    running.start_service("embedder-1")  # both replicas for the next test


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_one_of_two_embedders_killed_under_heavier_load_fails_no_chat(
    stack: tuple[LauncherSettings, Stack],
) -> None:
    settings, running = stack
    result, after = kill_a_replica_mid_load(settings, running, "sk-replica-slow", 30, 20)
    assert result.errors == []
    assert after["recalled"] > 0
    assert_stored(settings, "sk-replica-slow", result, timeout=120)
    running.start_service("embedder-1")
