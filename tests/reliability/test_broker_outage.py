"""Redis, the broker, stopped (SIGTERM) during chat load and started again on its
append-only file: chats keep being answered, the gateway's tasks wait in its spool, the
worker reconnects by itself, and the reply of every acknowledged turn is stored — also
the one Redis may be handing to the worker when it stops (docs/reliability.md, section 3)."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import redis

from bionic_common.memory_types import Role
from bionic_common.tasks import REMEMBER_EXCHANGE
from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.reliability.load import LoadResult, run_users
from tests.support.recording_upstream import RecordingUpstream, echo_reply
from tests.support.stack import AofRedis, list_memories, running_stack, stack_settings, wait_for

log = logging.getLogger(__name__)

USERS = 6


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AofRedis]:
    redis = AofRedis(tmp_path_factory.mktemp("redis-aof"))
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, recorder: RecordingUpstream, broker: AofRedis
) -> Iterator[tuple[LauncherSettings, Stack]]:
    settings = stack_settings(tmp_path_factory.mktemp("outage"), recorder.base_url, broker.url)
    with running_stack(settings) as running:
        yield settings, running


def gateway_metric(settings: LauncherSettings, name: str, where: str = "") -> float:
    """The sum of a gateway metric's samples whose labels contain `where` (0 if none)."""
    text = httpx.get(f"http://{settings.host}:{settings.gateway_port}/metrics", timeout=10).text
    pattern = rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$"
    return sum(float(v) for labels, v in re.findall(pattern, text, re.MULTILINE) if where in labels)


def missing_replies(
    settings: LauncherSettings, key: str, result: LoadResult
) -> dict[str, list[str]]:
    """Per user, the acknowledged turns that have no stored reply."""
    missing = {}
    for user, said in result.acknowledged.items():
        stored = {m.text for m in list_memories(settings, key, user) if m.role == Role.ASSISTANT}
        lost = [text for text in said if echo_reply(text) not in stored]
        if lost:
            missing[user] = lost
    return missing


def assert_replies_stored(
    settings: LauncherSettings, broker: AofRedis, key: str, result: LoadResult
) -> None:
    """Every acknowledged turn's reply is stored, and nothing waits in the gateway's spool
    or in Redis any more."""

    def lost() -> int:
        return sum(len(texts) for texts in missing_replies(settings, key, result).values())

    def settled() -> bool:
        spooled = gateway_metric(settings, "bionic_gateway_spooled_tasks")
        return spooled == 0 and redis.Redis.from_url(broker.url).llen("celery") == 0

    try:
        wait_for(lambda: lost() == 0 and settled(), timeout=180, interval=1)
    except AssertionError:
        published = gateway_metric(settings, "bionic_gateway_tasks_queued_total", "queued")
        raise AssertionError(
            f"replies not stored: {missing_replies(settings, key, result)};"
            f" settled: {settled()}, {published:.0f} tasks published since the gateway"
            f" started, {result.turns} turns"
        ) from None


def chat_through_outage(
    settings: LauncherSettings,
    running: Stack,
    broker: AofRedis,
    key: str,
    seconds: float,
    hang: bool = False,
) -> LoadResult:
    """Users chat all along; the broker is stopped (or, `hang`, frozen with SIGSTOP),
    stays so for `seconds`, and comes back."""
    users = [f"{key}-u{i}" for i in range(USERS)]
    url = f"http://{settings.host}:{settings.gateway_port}/v1"
    result = LoadResult()
    done = threading.Event()
    load = threading.Thread(
        target=lambda: asyncio.run(run_users(url, key, users, 0, result, "echo", until=done))
    )
    worker = running.pid("worker")
    load.start()
    try:
        wait_for(lambda: result.turns >= 2 * USERS or not load.is_alive(), timeout=60)
        before = result.turns
        failed = gateway_metric(settings, "bionic_gateway_tasks_queued_total", "failed")
        if hang:
            broker.pause()
        else:
            broker.stop()
        time.sleep(seconds)  # the outage: chats go on
        during = result.turns - before
        spooled = gateway_metric(settings, "bionic_gateway_spooled_tasks")
        failed = gateway_metric(settings, "bionic_gateway_tasks_queued_total", "failed") - failed
        if hang:
            broker.resume()
        else:
            broker.start()
        restarted = result.turns
        wait_for(lambda: result.turns >= restarted + 2 * USERS or not load.is_alive(), timeout=60)
    finally:
        done.set()
        load.join(60)
    log.info(
        "broker %s %.0fs: %d turns answered meanwhile (%d in all, %d errors), %.0f failed"
        " publishes, %.0f tasks in the gateway's spool when it came back",
        "hung" if hang else "down", seconds, during, result.turns, len(result.errors), failed,
        spooled,
    )  # fmt: skip
    assert result.errors == []
    assert during > 0 and spooled > 0  # chats went on, their replies waited in the spool
    assert failed > 0  # the publisher gave up on the broker and tried again, not held
    assert running.pid("worker") == worker  # reconnected by itself, not restarted
    return result


@pytest.mark.parametrize(
    "seconds", [5, pytest.param(30, marks=[pytest.mark.slow, pytest.mark.timeout(900)])]
)
def test_broker_down_for_seconds_loses_no_acknowledged_reply(
    stack: tuple[LauncherSettings, Stack], broker: AofRedis, seconds: int
) -> None:
    settings, running = stack
    key = f"sk-broker-{seconds}s"
    result = chat_through_outage(settings, running, broker, key, seconds=seconds)
    assert_replies_stored(settings, broker, key, result)
    assert gateway_metric(settings, "bionic_gateway_tasks_queued_total", "dropped") == 0


def test_a_hanging_broker_delays_replies_and_loses_none(
    stack: tuple[LauncherSettings, Stack], broker: AofRedis
) -> None:
    """Redis frozen (SIGSTOP) for 12 s, connections open and unanswered: chats go on, the
    publisher gives up on each publish after its socket timeout (tasks wait in the spool)
    instead of hanging with Redis, and once Redis runs again every reply is stored."""
    settings, running = stack
    key = "sk-broker-hang"
    result = chat_through_outage(settings, running, broker, key, seconds=12, hang=True)
    assert_replies_stored(settings, broker, key, result)
    assert gateway_metric(settings, "bionic_gateway_tasks_queued_total", "dropped") == 0


def test_spooled_replies_survive_a_gateway_restart(
    stack: tuple[LauncherSettings, Stack], broker: AofRedis
) -> None:
    """The spool is a file in the data folder: a gateway stopped while the broker is down
    publishes what waited once it is started again and the broker is back."""
    settings, running = stack
    key = "sk-broker-restart"
    url = f"http://{settings.host}:{settings.gateway_port}/v1"
    broker.stop()
    try:
        result = asyncio.run(
            run_users(url, key, [f"{key}-u{i}" for i in range(3)], 4, model="echo")
        )
        assert result.errors == []
        running.stop_service("gateway")
    finally:
        broker.start()
    spool = Path(settings.data_dir, "gateway-spool.sqlite")
    with closing(sqlite3.connect(spool)) as db:  # the gateway is stopped: the file is free
        query = "SELECT count(*) FROM tasks WHERE name = ?"
        waiting = db.execute(query, (REMEMBER_EXCHANGE,)).fetchone()[0]
    # one reply per acknowledged turn, none published yet (a turn whose recall was degraded
    # under load adds a task that stores its user message)
    assert waiting == result.turns
    running.start_service("gateway")
    assert_replies_stored(settings, broker, key, result)
