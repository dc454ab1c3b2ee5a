"""The gateway's task queue against a real Redis that goes away: tasks wait in the spool
and reach the broker in order, across an outage and a restart of the queue; past its
bounds the spool drops and counts; a spool file belongs to one queue at a time."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from bionic_common.memory_types import Scope
from bionic_common.tasks import REMEMBER_EXCHANGE
from bionic_gateway.metrics import GatewayMetrics
from bionic_gateway.queue import SpoolLimits, TaskQueue
from tests.support.ports import free_port
from tests.support.stack import AofRedis, wait_for

SCOPE = Scope(tenant="t", user="u")


def make_queue(
    broker_url: str, spool: Path | None, max_tasks: int = 1000
) -> tuple[TaskQueue, CollectorRegistry]:
    registry = CollectorRegistry()
    limits = SpoolLimits(str(spool) if spool else None, max_tasks, 1 << 20)
    return TaskQueue(broker_url, GatewayMetrics(registry), 64, limits), registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def published(broker_url: str) -> list[str]:
    """The request ids of the tasks in the broker's queue, oldest first."""
    messages = redis.Redis.from_url(broker_url).lrange("celery", 0, -1)
    bodies = [json.loads(base64.b64decode(json.loads(m)["body"])) for m in messages]
    return [args[0]["request_id"] for args, _, _ in reversed(bodies)]  # LPUSH: newest first


def test_tasks_reach_the_broker_in_order_across_an_outage_and_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = AofRedis(tmp_path)
    spool = tmp_path / "spool.sqlite"
    broker.start()
    caplog.set_level(logging.WARNING, logger="bionic_gateway.queue")
    try:
        queue, registry = make_queue(broker.url, spool)
        for i in range(3):
            queue.remember_exchange(SCOPE, f"reply {i}", f"req{i:02}")
        wait_for(lambda: len(published(broker.url)) == 3)
        broker.kill()
        for i in range(3, 13):
            queue.remember_exchange(SCOPE, f"reply {i}", f"req{i:02}")
        wait_for(lambda: sample(registry, "bionic_gateway_spooled_tasks") == 10)
        queue.close()  # during the outage: the file keeps the 10 tasks
        broker.start()
        queue, registry = make_queue(broker.url, spool)
        wait_for(lambda: len(published(broker.url)) == 13)
        queue.close()
        assert published(broker.url) == [f"req{i:02}" for i in range(13)]
        assert sample(registry, "bionic_gateway_spooled_tasks") == 0
        # the outage is a broker error, logged once as such: no traceback of a client bug
        messages = [r.getMessage() for r in caplog.records]
        assert not [m for m in messages if "unexpectedly" in m]
        assert len([m for m in messages if m.startswith("broker unreachable")]) == 1
    finally:
        broker.stop()


def test_past_its_bounds_the_spool_drops_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    queue, registry = make_queue(dead, None, max_tasks=5)
    with caplog.at_level(logging.ERROR, logger="bionic_gateway.queue"):
        for i in range(8):
            queue.remember_exchange(SCOPE, f"reply {i}", f"req{i}")
        labels = {"task": REMEMBER_EXCHANGE, "outcome": "dropped"}
        wait_for(lambda: sample(registry, "bionic_gateway_tasks_queued_total", **labels) == 3)
        assert sample(registry, "bionic_gateway_spooled_tasks") == 5
        queue.close()
    dropping = [r for r in caplog.records if r.getMessage().startswith("dropping tasks")]
    assert len(dropping) == 1 and "the spool is full" in dropping[0].getMessage()
    assert "5 tasks lost" in caplog.records[-1].getMessage()  # a spool in memory


def test_a_spool_file_belongs_to_one_queue(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    queue, _ = make_queue(dead, tmp_path / "spool.sqlite")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            make_queue(dead, tmp_path / "spool.sqlite")
    finally:
        queue.close()
