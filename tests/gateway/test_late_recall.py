"""A Recall past the memory deadline: the turn goes on without memory at once, and its
message is queued for the worker only when the Recall fails, not when it was merely slow
(it stored the message; queueing it too would store and reinforce it twice).

The embedder and memory clients are stand-ins whose Recall answers when the test says, so
that "past the deadline" is certain rather than a matter of timing."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from bionic_common.clients import Embeddings
from bionic_common.memory_types import Recall, Scope
from bionic_gateway import recall as recall_module
from bionic_gateway.metrics import GatewayMetrics
from bionic_gateway.recall import Controls, Recaller

SCOPE = Scope("t", "u")
DEADLINE = 0.05


class Embedder:
    def __init__(self, answered: asyncio.Event | None = None) -> None:
        self.answered = answered

    async def embed(self, texts: list[str], kind: str, timeout: float | None = None) -> Embeddings:
        if self.answered is not None:
            await self.answered.wait()
        return Embeddings(array=np.zeros((len(texts), 4), dtype=np.float32), tokens=1)


class Memory:
    """Answers each Recall once `answer` is set, with `error` raised if there is one."""

    def __init__(self, error: grpc.aio.AioRpcError | None = None) -> None:
        self.answer = asyncio.Event()
        self.error = error
        self.calls: list[dict[str, Any]] = []

    async def recall(self, scope: Scope, text: str, vector: list[float], **kw: Any) -> Recall:
        self.calls.append({"text": text, **kw})
        await self.answer.wait()
        if self.error is not None:
            raise self.error
        return Recall(stored=None, memories=[])


def recaller(
    memory: Memory, embedder: Embedder | None = None
) -> tuple[Recaller, CollectorRegistry]:
    registry = CollectorRegistry()
    made = Recaller(
        embedder or Embedder(),  # type: ignore[arg-type]
        memory,  # type: ignore[arg-type]
        GatewayMetrics(registry),
        DEADLINE,
        0,
        late_timeout=5.0,
    )
    return made, registry


def late(registry: CollectorRegistry, outcome: str) -> float | None:
    return registry.get_sample_value("bionic_gateway_late_recalls_total", {"outcome": outcome})


async def test_a_slow_recall_that_stores_is_not_queued_again() -> None:
    memory = Memory()
    recall, registry = recaller(memory)
    turn = await recall.turn(SCOPE, "hello", Controls(), "req-1")
    assert turn.degraded == "timeout" and turn.late is not None
    queued: list[str] = []
    turn.when_not_stored(lambda: queued.append("req-1"))
    memory.answer.set()
    await asyncio.wait([turn.late])
    assert queued == [] and late(registry, "stored") == 1
    assert memory.calls[0]["timeout"] == 5.0 and memory.calls[0]["dry_run"] is False


async def test_a_slow_recall_that_fails_is_queued_once() -> None:
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone"
    )
    memory = Memory(error)
    recall, registry = recaller(memory)
    turn = await recall.turn(SCOPE, "hello", Controls(), "req-2")
    queued: list[str] = []
    turn.when_not_stored(lambda: queued.append("req-2"))
    assert queued == []  # not yet: the Recall may still store it
    memory.answer.set()
    assert turn.late is not None
    await asyncio.wait([turn.late])
    assert queued == ["req-2"] and late(registry, "failed") == 1


async def test_a_recall_never_sent_is_queued_at_once() -> None:
    memory = Memory()
    recall, _ = recaller(memory, Embedder(answered=asyncio.Event()))  # embedding never ends
    turn = await recall.turn(SCOPE, "hello", Controls(), "req-3")
    queued: list[str] = []
    turn.when_not_stored(lambda: queued.append("req-3"))
    assert turn.degraded == "timeout" and queued == ["req-3"] and memory.calls == []


async def test_a_late_recall_that_stores_nothing_is_let_go() -> None:
    memory = Memory()
    recall, _ = recaller(memory)
    turn = await recall.turn(SCOPE, "hello", Controls(mode="read_only"), "req-4")
    assert turn.degraded == "timeout" and turn.late is None and not turn.stores


async def test_late_recalls_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recall_module, "MAX_LATE_RECALLS", 1)
    memory = Memory()
    recall, _ = recaller(memory)
    first = await recall.turn(SCOPE, "one", Controls(), "req-5")
    second = await recall.turn(SCOPE, "two", Controls(), "req-6")
    queued: list[str] = []
    second.when_not_stored(lambda: queued.append("req-6"))
    assert first.late is not None and second.late is None and queued == ["req-6"]
    memory.answer.set()
    await asyncio.wait([first.late])
