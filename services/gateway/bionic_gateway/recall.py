"""Recall for a chat turn: embed the user's words and ask the memory service, in time.

Chat uses `turn`, which never fails: past the deadline, or with the embedder or memory
service down, the turn goes on without memory and says so. A Recall that was sent goes on
past the deadline (up to `late_timeout`), so that the message it stores is queued for the
worker only when the Recall failed, never stored twice because it was merely slow. The
recall preview of the memory API uses `fetch`, which is the same call without storing and
with errors raised. The turn's Recall stores with the request id as its idempotency key,
and so does the worker's retry of the turn: a Recall that failed after it stored (a cut
connection, a lost answer) and its retry store the message once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import grpc
import numpy as np

from bionic_common.clients import EmbedderClient, MemoryClient
from bionic_common.memory_types import Memory, Recall, Scope
from bionic_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

MemoryMode = Literal["on", "read_only", "off"]
MAX_LATE_RECALLS = 256  # Recalls past the deadline awaited for their store at once


@dataclass(frozen=True, slots=True)
class Controls:
    """What a request lets memory do: store and recall (on), only recall, or nothing."""

    mode: MemoryMode = "on"
    recall_limit: int = 0  # 0: the configured default


@dataclass(slots=True)
class Recalled:
    memories: list[Memory]
    embed_seconds: float
    recall_seconds: float


@dataclass(slots=True)
class TurnMemory:
    scope: Scope
    controls: Controls
    recalled: list[Memory] = field(default_factory=list)
    degraded: str | None = None  # why memory was skipped: timeout or a gRPC status
    embed_seconds: float = 0.0
    recall_seconds: float = 0.0
    late: asyncio.Task[Recall] | None = None  # a Recall still running past the deadline

    def when_not_stored(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this degraded turn's message is known not to be in memory:
        at once, or when its late Recall fails (not when it succeeds: it stored it)."""
        if self.late is None:
            callback()
            return

        def settled(late: asyncio.Task[Recall]) -> None:
            if late.cancelled() or late.exception() is not None:
                callback()

        self.late.add_done_callback(settled)

    @property
    def outcome(self) -> str:
        return "degraded" if self.degraded else self.controls.mode

    @property
    def stores(self) -> bool:
        """Whether this turn's messages belong in memory."""
        return self.controls.mode == "on"

    def header(self) -> str:
        """What memory did, for the x-bionic-memory response header."""
        if self.controls.mode == "off":
            return "off"
        if self.degraded:
            return "degraded"
        read_only = "; read-only" if self.controls.mode == "read_only" else ""
        return f"recalled={len(self.recalled)}{read_only}"


class Recaller:
    def __init__(
        self,
        embedder: EmbedderClient,
        memory: MemoryClient,
        metrics: GatewayMetrics,
        deadline: float,
        default_limit: int,
        late_timeout: float,
    ) -> None:
        self._embedder = embedder
        self._memory = memory
        self._metrics = metrics
        self._deadline = deadline
        self._default_limit = default_limit
        self._late_timeout = late_timeout
        self._late: set[asyncio.Task[Recall]] = set()  # Recalls past the deadline

    async def fetch(
        self,
        scope: Scope,
        text: str,
        controls: Controls,
        timeout: float,
        metadata: dict[str, str] | None = None,
    ) -> Recalled:
        """Embed `text` and recall for it; stores it too when the controls say `on`."""
        started = time.perf_counter()
        embedded = await self._embedder.embed([text], "query", timeout=timeout)
        embedded_at = time.perf_counter()
        recall = await self._recall(
            scope,
            text,
            embedded.array[0],
            controls,
            metadata,
            max(timeout - (embedded_at - started), 0.001),
        )
        return Recalled(recall.memories, embedded_at - started, time.perf_counter() - embedded_at)

    async def turn(
        self, scope: Scope, text: str, controls: Controls, request_id: str
    ) -> TurnMemory:
        """Recall for a chat turn within the deadline; never raises for memory trouble.

        A Recall still running at the deadline is not cancelled when it stores the message:
        it may be about to, and the turn's `when_not_stored` must know whether it did.
        """
        turn = TurnMemory(scope, controls)
        if controls.mode == "off" or not text.strip():
            return turn
        started = time.perf_counter()
        recall: asyncio.Task[Recall] | None = None
        try:
            async with asyncio.timeout(self._deadline):
                embedded = await self._embedder.embed([text], "query", timeout=self._deadline)
                embedded_at = time.perf_counter()
                recall = asyncio.ensure_future(
                    self._recall(
                        scope,
                        text,
                        embedded.array[0],
                        controls,
                        {"request_id": request_id},
                        self._late_timeout,
                        idempotency_key=request_id,
                    )
                )
                found = await asyncio.shield(recall)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            reason = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
            log.warning("memory unavailable (%s): answering without it", reason)
            self._metrics.degraded.labels(reason).inc()
            turn.degraded = reason
            if recall is not None and not recall.done():
                self._outlive(recall, turn)
            return turn
        turn.recalled = found.memories
        turn.embed_seconds = embedded_at - started
        turn.recall_seconds = time.perf_counter() - embedded_at
        self._metrics.stage["embed"].observe(turn.embed_seconds)
        self._metrics.stage["recall"].observe(turn.recall_seconds)
        return turn

    def _outlive(self, recall: asyncio.Task[Recall], turn: TurnMemory) -> None:
        """Let a Recall past the deadline finish, if it stores and there is room."""
        if not turn.stores or len(self._late) >= MAX_LATE_RECALLS:
            recall.cancel()  # queued at once; the request id keeps a store that landed single
            return
        self._late.add(recall)
        recall.add_done_callback(self._settled)
        turn.late = recall

    def _settled(self, recall: asyncio.Task[Recall]) -> None:
        self._late.discard(recall)
        failed = recall.cancelled() or recall.exception() is not None
        self._metrics.late_recalls.labels("failed" if failed else "stored").inc()

    async def _recall(
        self,
        scope: Scope,
        text: str,
        vector: np.ndarray,
        controls: Controls,
        metadata: dict[str, str] | None,
        timeout: float,
        idempotency_key: str = "",
    ) -> Recall:
        return await self._memory.recall(
            scope,
            text,
            vector,
            limit=controls.recall_limit or self._default_limit,
            metadata=metadata,
            dry_run=controls.mode != "on",
            idempotency_key=idempotency_key,
            timeout=timeout,
        )
