"""Recall for a chat turn: embed the user's words and ask the memory service, in time.

Chat uses `turn`, which never fails: past the deadline, or with the embedder or memory
service down, the turn goes on without memory and says so. The recall preview of the
memory API uses `fetch`, which is the same call without storing and with errors raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import grpc

from bionic_common.clients import EmbedderClient, MemoryClient
from bionic_common.memory_types import Memory, Scope
from bionic_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

MemoryMode = Literal["on", "read_only", "off"]


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
    ) -> None:
        self._embedder = embedder
        self._memory = memory
        self._metrics = metrics
        self._deadline = deadline
        self._default_limit = default_limit

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
        recall = await self._memory.recall(
            scope,
            text,
            embedded.vectors[0],
            limit=controls.recall_limit or self._default_limit,
            metadata=metadata,
            dry_run=controls.mode != "on",
            timeout=max(timeout - (embedded_at - started), 0.001),
        )
        return Recalled(recall.memories, embedded_at - started, time.perf_counter() - embedded_at)

    async def turn(
        self, scope: Scope, text: str, controls: Controls, request_id: str
    ) -> TurnMemory:
        """Recall for a chat turn within the deadline; never raises for memory trouble."""
        turn = TurnMemory(scope, controls)
        if controls.mode == "off" or not text.strip():
            return turn
        try:
            async with asyncio.timeout(self._deadline):
                found = await self.fetch(
                    scope, text, controls, self._deadline, {"request_id": request_id}
                )
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            reason = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
            log.warning("memory unavailable (%s): answering without it", reason)
            self._metrics.degraded.labels(reason).inc()
            turn.degraded = reason
            return turn
        turn.recalled = found.memories
        turn.embed_seconds, turn.recall_seconds = found.embed_seconds, found.recall_seconds
        self._metrics.stage_seconds.labels("embed").observe(found.embed_seconds)
        self._metrics.stage_seconds.labels("recall").observe(found.recall_seconds)
        return turn
