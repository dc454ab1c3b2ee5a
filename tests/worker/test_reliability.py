"""Nothing queued is lost: a memory-service outage, and a worker killed with -9 mid-task,
on each broker, with real worker processes."""

from __future__ import annotations

import os
import signal

from bionic_common.memory_types import Role, Tier
from bionic_common.tasks import REMEMBER_EXCHANGE
from tests.support.stack import wait_for
from tests.worker.conftest import (
    QUICK_REDELIVERY,
    WORKER_ENV,
    WorkerStack,
    memories_of,
    metric,
    new_scope,
    tasks_done,
)
from tests.worker.test_remember_exchange import exchange

TOPICS = ["tea", "trains", "violins", "glaciers", "tax forms", "orchids", "chess", "kites"]


def texts(n: int) -> list[str]:
    return [f"Reply {i}: a note about {TOPICS[i % len(TOPICS)]} number {i}." for i in range(n)]


def queue_length(ws: WorkerStack) -> float:
    return metric(ws, "bionic_worker_queue_length", queue="celery")


def test_replies_queued_while_memory_is_down_are_all_stored_once(
    worker_stack: WorkerStack,
) -> None:
    ws = worker_stack
    scope = new_scope("outage")
    replies = texts(200)
    ws.stack.stop_service("memory")
    try:
        app = ws.producer()
        try:
            for i, reply in enumerate(replies):
                app.send_task(REMEMBER_EXCHANGE, args=[exchange(scope, reply, f"turn-{i}")])
        finally:
            app.close()
        # The worker keeps trying while memory is down; the replies wait in the broker.
        wait_for(
            lambda: (
                metric(
                    ws, "bionic_worker_task_retries_total", task=REMEMBER_EXCHANGE, reason="outage"
                )
                >= 50
            ),
            timeout=60,
        )
        assert tasks_done(ws, REMEMBER_EXCHANGE, "failure") == 0
    finally:
        ws.stack.start_service("memory")
    stored = wait_for(lambda: _all(memories_of(ws, scope), len(replies)), timeout=120)
    assert sorted(m.text for m in stored) == sorted(replies)
    assert all(m.role == Role.ASSISTANT and m.tier == Tier.LONG_TERM for m in stored)
    assert sorted(m.metadata["request_id"] for m in stored) == sorted(
        f"turn-{i}" for i in range(len(replies))
    )
    assert tasks_done(ws, REMEMBER_EXCHANGE, "failure") == 0


def _all(memories: list, n: int) -> list:  # type: ignore[type-arg]
    long_term = [m for m in memories if m.tier == Tier.LONG_TERM]
    assert len(long_term) <= n, "more memories than replies: something was stored twice"
    return long_term if len(long_term) == n else []


def test_a_task_of_a_worker_killed_mid_task_is_delivered_again_and_done_once(
    worker_stack: WorkerStack,
) -> None:
    ws = worker_stack
    scope = new_scope("kill")
    replies = texts(3)
    # Memory is down and RPCs wait up to 7 s for it: a taken task is mid-call.
    ws.stack.stop_service("memory")
    ws.restart("worker", **QUICK_REDELIVERY, BIONIC_WORKER_RPC_TIMEOUT="7")
    try:
        app = ws.producer()
        try:
            for i, reply in enumerate(replies):
                app.send_task(REMEMBER_EXCHANGE, args=[exchange(scope, reply, f"kill-{i}")])
        finally:
            app.close()
        wait_for(lambda: queue_length(ws) == 0, timeout=10)  # all three taken
        assert tasks_done(ws, REMEMBER_EXCHANGE) == 0  # none finished
        pid = ws.stack.pid("worker")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    finally:
        ws.stack.start_service("memory")
        ws.restart("worker", BIONIC_WORKER_RPC_TIMEOUT="2")
    try:
        # Delivered again once the visibility timeout (12 s here) ran out.
        stored = wait_for(lambda: _all(memories_of(ws, scope), len(replies)), timeout=60)
        assert sorted(m.text for m in stored) == sorted(replies)
        assert tasks_done(ws, REMEMBER_EXCHANGE) >= len(replies)
    finally:
        ws.restart("worker", **{k: WORKER_ENV[k] for k in QUICK_REDELIVERY})
