"""Async gRPC clients of the embedder and the memory service, speaking domain types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import grpc

from bionic.embedder.v1 import embedder_pb2 as epb
from bionic.embedder.v1 import embedder_pb2_grpc as epb_grpc
from bionic.memory.v1 import memory_pb2 as mpb
from bionic.memory.v1 import memory_pb2_grpc as mpb_grpc
from bionic_common.grpc_service import new_channel
from bionic_common.memory_pb import (
    ROLE_TO_PB,
    TIER_TO_PB,
    dict_to_struct,
    memory_from_pb,
    scope_to_pb,
)
from bionic_common.memory_types import Memory, Recall, Role, Scope, Tier

EmbedKind = Literal["query", "document"]
KIND_TO_PB = {"query": epb.EMBED_KIND_QUERY, "document": epb.EMBED_KIND_DOCUMENT}
POOLING_FROM_PB = {
    epb.POOLING_MEAN: "mean",
    epb.POOLING_LAST_TOKEN: "last_token",
    epb.POOLING_CLS: "cls",
}


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    tokens: int


@dataclass(frozen=True, slots=True)
class EmbedderInfo:
    model_id: str
    dimension: int
    max_tokens: int
    pooling: str
    device: str


class EmbedderClient:
    """Talks to every embedder replica behind `target`, round robin."""

    def __init__(self, target: str) -> None:
        self._channel = new_channel(target)
        self._stub = epb_grpc.EmbedderServiceStub(self._channel)

    async def embed(
        self, texts: list[str], kind: EmbedKind, timeout: float | None = None
    ) -> Embeddings:
        reply = await self._stub.Embed(
            epb.EmbedRequest(texts=texts, kind=KIND_TO_PB[kind]),
            timeout=timeout,
            wait_for_ready=True,
        )
        return Embeddings(
            vectors=[list(e.values) for e in reply.embeddings], tokens=reply.prompt_tokens
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
    def __init__(self, target: str) -> None:
        self._channel = new_channel(target)
        self._stub = mpb_grpc.MemoryServiceStub(self._channel)

    async def recall(
        self,
        scope: Scope,
        text: str,
        vector: list[float],
        limit: int = 0,
        metadata: dict[str, Any] | None = None,
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> Recall:
        reply = await self._stub.Recall(
            mpb.RecallRequest(
                scope=scope_to_pb(scope),
                text=text,
                vector=vector,
                limit=limit,
                metadata=dict_to_struct(metadata or {}),
                dry_run=dry_run,
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
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return memory_from_pb(reply.memory), reply.created

    async def list(
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
                tier=TIER_TO_PB[tier] if tier else mpb.TIER_UNSPECIFIED,
            ),
            timeout=timeout,
            wait_for_ready=True,
        )
        return [memory_from_pb(m) for m in reply.memories], reply.next_page_token

    async def close(self) -> None:
        await self._channel.close()


def is_unavailable(exc: grpc.aio.AioRpcError) -> bool:
    """Transient: the service is down, restarting, overloaded or too slow."""
    return exc.code() in {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
