"""Async gRPC clients of the embedder and the memory service, speaking domain types."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc
import numpy as np

from bionic.embedder.v1 import embedder_pb2 as epb
from bionic.embedder.v1 import embedder_pb2_grpc as epb_grpc
from bionic.memory.v1 import memory_pb2 as mpb
from bionic.memory.v1 import memory_pb2_grpc as mpb_grpc
from bionic_common.grpc_service import new_channel
from bionic_common.memory_pb import (
    DISK_FULL,
    ROLE_TO_PB,
    TIER_TO_PB,
    dict_to_struct,
    exported_from_pb,
    exported_to_pb,
    memory_from_pb,
    scope_from_pb,
    scope_to_pb,
    tier_stats_from_pb,
)
from bionic_common.memory_types import (
    Cluster,
    Exported,
    Memory,
    Pruned,
    Recall,
    Role,
    Scope,
    Tier,
    TierStats,
)
from bionic_common.vectors import packed_f32, unpacked_rows

EmbedKind = Literal["query", "document"]
EMBEDDER_SERVICE = epb.DESCRIPTOR.services_by_name["EmbedderService"].full_name
KIND_TO_PB = {"query": epb.EMBED_KIND_QUERY, "document": epb.EMBED_KIND_DOCUMENT}
POOLING_FROM_PB = {
    epb.POOLING_MEAN: "mean",
    epb.POOLING_LAST_TOKEN: "last_token",
    epb.POOLING_CLS: "cls",
}


@dataclass(frozen=True, slots=True)
class Embeddings:
    array: np.ndarray  # texts x dimension, float32
    tokens: int

    @property
    def vectors(self) -> list[list[float]]:
        vectors: list[list[float]] = self.array.tolist()
        return vectors


@dataclass(frozen=True, slots=True)
class EmbedderInfo:
    model_id: str
    dimension: int
    max_tokens: int
    pooling: str
    device: str


class EmbedderClient:
    """Talks to every embedder replica behind `target`, round robin; embedding is
    idempotent, so a call whose replica died is retried on another."""

    def __init__(self, target: str) -> None:
        self._channel = new_channel(target, retry_service=EMBEDDER_SERVICE)
        self._stub = epb_grpc.EmbedderServiceStub(self._channel)

    async def embed(
        self, texts: list[str], kind: EmbedKind, timeout: float | None = None
    ) -> Embeddings:
        reply = await self._stub.Embed(
            epb.EmbedRequest(
                texts=texts, kind=KIND_TO_PB[kind], encoding=epb.VECTOR_ENCODING_PACKED_F32
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return Embeddings(
            array=unpacked_rows(reply.packed, len(texts), reply.dimension),
            tokens=reply.prompt_tokens,
        )

    async def info(self, timeout: float | None = None) -> EmbedderInfo:
        reply = await self._stub.Info(epb.InfoRequest(), timeout=timeout, wait_for_ready=True)
        return EmbedderInfo(
            model_id=reply.model_id,
            dimension=reply.dimension,
            max_tokens=reply.max_tokens,
            pooling=POOLING_FROM_PB.get(reply.pooling, "unspecified"),
            device=reply.device,
        )

    async def close(self) -> None:
        await self._channel.close()


class MemoryClient:
    """Every call waits for a (re)connecting service up to its timeout."""

    def __init__(self, target: str) -> None:
        self._channel = new_channel(target)
        self._stub = mpb_grpc.MemoryServiceStub(self._channel)

    async def recall(
        self,
        scope: Scope,
        text: str,
        vector: Sequence[float] | np.ndarray,
        limit: int = 0,
        metadata: dict[str, Any] | None = None,
        dry_run: bool = False,
        now: float = 0.0,
        idempotency_key: str = "",
        timeout: float | None = None,
    ) -> Recall:
        reply = await self._stub.Recall(
            mpb.RecallRequest(
                scope=scope_to_pb(scope),
                text=text,
                packed_vector=packed_f32(vector),
                limit=limit,
                metadata=dict_to_struct(metadata) if metadata else None,
                dry_run=dry_run,
                now=now,
                idempotency_key=idempotency_key,
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return Recall(
            stored=memory_from_pb(reply.stored) if reply.HasField("stored") else None,
            memories=[memory_from_pb(m) for m in reply.memories],
        )

    async def remember(
        self,
        scope: Scope,
        role: Role,
        text: str,
        vector: list[float],
        metadata: dict[str, Any] | None = None,
        idempotency_key: str = "",
        pinned: bool = False,
        now: float = 0.0,
        reinforce_related: bool = False,
        timeout: float | None = None,
    ) -> tuple[Memory, bool]:
        reply = await self._stub.Remember(
            mpb.RememberRequest(
                scope=scope_to_pb(scope),
                role=ROLE_TO_PB[role],
                text=text,
                vector=vector,
                metadata=dict_to_struct(metadata or {}),
                idempotency_key=idempotency_key,
                pinned=pinned,
                now=now,
                reinforce_related=reinforce_related,
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return memory_from_pb(reply.memory), reply.created

    async def search(
        self,
        scope: Scope,
        vector: list[float],
        limit: int = 0,
        tier: Tier | None = None,
        min_score: float = 0.0,
        now: float = 0.0,
        timeout: float | None = None,
    ) -> list[Memory]:
        reply = await self._stub.Search(
            mpb.SearchRequest(
                scope=scope_to_pb(scope),
                vector=vector,
                limit=limit,
                tier=_tier(tier),
                min_score=min_score,
                now=now,
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return [memory_from_pb(m) for m in reply.memories]

    async def get(self, scope: Scope, memory_id: str, timeout: float | None = None) -> Memory:
        reply = await self._stub.Get(
            mpb.GetRequest(scope=scope_to_pb(scope), id=memory_id),
            timeout=timeout,
            wait_for_ready=True,
        )
        return memory_from_pb(reply)

    async def list_page(
        self,
        scope: Scope,
        page_size: int = 0,
        page_token: str = "",
        tier: Tier | None = None,
        timeout: float | None = None,
    ) -> tuple[list[Memory], str]:
        reply = await self._stub.List(
            mpb.ListRequest(
                scope=scope_to_pb(scope),
                page_size=page_size,
                page_token=page_token,
                tier=_tier(tier),
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return [memory_from_pb(m) for m in reply.memories], reply.next_page_token

    async def update(
        self,
        scope: Scope,
        memory_id: str,
        text: str | None = None,
        vector: list[float] | None = None,
        pinned: bool | None = None,
        metadata: dict[str, Any] | None = None,
        now: float = 0.0,
        timeout: float | None = None,
    ) -> Memory:
        request = mpb.UpdateRequest(
            scope=scope_to_pb(scope),
            id=memory_id,
            vector=vector or [],
            metadata=dict_to_struct(metadata or {}),
            now=now,
        )
        if text is not None:
            request.text = text
        if pinned is not None:
            request.pinned = pinned
        reply = await self._stub.Update(request, timeout=timeout, wait_for_ready=True)
        return memory_from_pb(reply)

    async def set_summary(
        self,
        scope: Scope,
        memory_id: str,
        summary: str,
        vector: list[float],
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Memory:
        reply = await self._stub.SetSummary(
            mpb.SetSummaryRequest(
                scope=scope_to_pb(scope),
                id=memory_id,
                summary=summary,
                vector=vector,
                metadata=dict_to_struct(metadata or {}),
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return memory_from_pb(reply)

    async def delete(self, scope: Scope, memory_id: str, timeout: float | None = None) -> bool:
        reply = await self._stub.Delete(
            mpb.DeleteRequest(scope=scope_to_pb(scope), id=memory_id),
            timeout=timeout,
            wait_for_ready=True,
        )
        return bool(reply.deleted)

    async def forget_user(self, scope: Scope, timeout: float | None = None) -> int:
        reply = await self._stub.ForgetUser(
            mpb.ForgetUserRequest(scope=scope_to_pb(scope)), timeout=timeout, wait_for_ready=True
        )
        return int(reply.deleted)

    async def export(self, scope: Scope, timeout: float | None = None) -> AsyncIterator[Exported]:
        call = self._stub.Export(
            mpb.ExportRequest(scope=scope_to_pb(scope)), timeout=timeout, wait_for_ready=True
        )
        async for item in call:
            yield exported_from_pb(item)

    async def import_(
        self, scope: Scope, items: AsyncIterable[Exported], timeout: float | None = None
    ) -> tuple[int, int]:
        """Restore memories; returns (imported, skipped)."""

        async def requests() -> AsyncIterator[mpb.ImportRequest]:
            async for item in items:
                yield mpb.ImportRequest(scope=scope_to_pb(scope), memory=exported_to_pb(item))

        reply = await self._stub.Import(requests(), timeout=timeout, wait_for_ready=True)
        return reply.imported, reply.skipped

    async def stats(
        self, scope: Scope, now: float = 0.0, timeout: float | None = None
    ) -> list[TierStats]:
        reply = await self._stub.Stats(
            mpb.StatsRequest(scope=scope_to_pb(scope), now=now),
            timeout=timeout,
            wait_for_ready=True,
        )
        return [tier_stats_from_pb(t) for t in reply.tiers]

    async def prune(
        self, now: float = 0.0, tier: Tier | None = None, timeout: float | None = None
    ) -> Pruned:
        reply = await self._stub.Prune(
            mpb.PruneRequest(now=now, tier=_tier(tier)), timeout=timeout, wait_for_ready=True
        )
        return Pruned(
            forgotten_long_term=reply.forgotten_long_term,
            forgotten_short_term=reply.forgotten_short_term,
            archived=reply.archived,
            forgotten_archive=reply.forgotten_archive,
        )

    async def list_scopes(
        self, tenant: str = "", timeout: float | None = None
    ) -> AsyncIterator[Scope]:
        call = self._stub.ListScopes(
            mpb.ListScopesRequest(tenant=tenant), timeout=timeout, wait_for_ready=True
        )
        async for item in call:
            yield scope_from_pb(item)

    async def scan_for_suppression(
        self,
        scope: Scope,
        similarity_threshold: float = 0.0,
        max_memories: int = 0,
        timeout: float | None = None,
    ) -> list[Cluster]:
        reply = await self._stub.ScanForSuppression(
            mpb.ScanRequest(
                scope=scope_to_pb(scope),
                similarity_threshold=similarity_threshold,
                max_memories=max_memories,
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return [Cluster(c.representative_id, list(c.member_ids)) for c in reply.clusters]

    async def merge(
        self,
        scope: Scope,
        representative_id: str,
        member_ids: list[str],
        now: float = 0.0,
        timeout: float | None = None,
    ) -> Memory:
        reply = await self._stub.Merge(
            mpb.MergeRequest(
                scope=scope_to_pb(scope),
                representative_id=representative_id,
                member_ids=member_ids,
                now=now,
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return memory_from_pb(reply)

    async def close(self) -> None:
        await self._channel.close()


def _tier(tier: Tier | None) -> mpb.Tier.ValueType:
    return TIER_TO_PB[tier] if tier else mpb.TIER_UNSPECIFIED


def is_disk_full(exc: grpc.aio.AioRpcError) -> bool:
    """A write the memory service refused because its data disk is full."""
    trailer = exc.trailing_metadata() or ()
    return exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and any(
        tuple(item) == DISK_FULL for item in trailer
    )


def is_unavailable(exc: grpc.aio.AioRpcError) -> bool:
    """Transient: the service is down, restarting, overloaded or too slow."""
    return exc.code() in {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
