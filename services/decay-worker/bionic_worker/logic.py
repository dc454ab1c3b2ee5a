"""What the tasks do, as plain functions over injected clients.

Every function is safe to run twice with the same input: writes carry idempotency keys,
summaries are skipped once made, prunes and merges of what is already gone change nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from bionic_common.clients import EmbedderClient, MemoryClient
from bionic_common.memory_types import Memory, Pruned, Role, Scope, Tier
from bionic_common.tasks import ExchangeMessage, SummarizeMessage, UserTurnMessage
from bionic_worker.summary import Summarizer, Summary

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    embedder: EmbedderClient
    memory: MemoryClient
    summarizer: Summarizer
    timeout: float

    async def close(self) -> None:
        await self.embedder.close()
        await self.memory.close()
        await self.summarizer.close()


@dataclass(frozen=True, slots=True)
class Suppressed:
    clusters: int
    merged: int  # memories folded into a representative


async def remember_exchange(services: Services, message: ExchangeMessage) -> Memory:
    """Store the assistant's reply of one chat turn as a long-term memory, and reinforce
    (and promote into short-term memory) the memories it relates to — once per turn."""
    scope = Scope(tenant=message["tenant"], user=message["user"])
    return await _remember(
        services,
        scope,
        Role.ASSISTANT,
        message["reply"],
        message["request_id"],
        message["metadata"],
    )


async def remember_user_turn(services: Services, message: UserTurnMessage) -> Memory:
    """Store a user message the chat path could not store, as that path would have."""
    scope = Scope(tenant=message["tenant"], user=message["user"])
    return await _remember(
        services,
        scope,
        Role.USER,
        message["text"],
        message["request_id"],
        message["metadata"],
    )


async def _remember(
    services: Services,
    scope: Scope,
    role: Role,
    text: str,
    key: str,
    metadata: dict[str, object],
) -> Memory:
    # A long text is embedded from its head (the embedder truncates); `summarize` refines it.
    embedded = await services.embedder.embed([text], "document", timeout=services.timeout)
    memory, _ = await services.memory.remember(
        scope,
        role,
        text,
        embedded.vectors[0],
        metadata=metadata,
        idempotency_key=key,
        reinforce_related=True,
        timeout=services.timeout,
    )
    return memory


def needs_summary(memory: Memory, threshold: int) -> bool:
    return len(memory.text) > threshold and not memory.summary


async def summarize(
    services: Services, message: SummarizeMessage, threshold: int
) -> tuple[Memory, Summary] | None:
    """Summarise a long memory and make the summary its embedded document (its full text
    stays). None when there is nothing to do: gone, short, or already summarised."""
    scope = Scope(tenant=message["tenant"], user=message["user"])
    try:
        memory = await services.memory.get(scope, message["memory_id"], timeout=services.timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        log.info("memory %s is gone; nothing to summarise", message["memory_id"])
        return None
    if not needs_summary(memory, threshold):
        return None
    summary = await services.summarizer.summarize(memory.text)
    embedded = await services.embedder.embed([summary.text], "document", timeout=services.timeout)
    updated = await services.memory.set_summary(
        scope,
        memory.id,
        summary.text,
        embedded.vectors[0],
        metadata=summary.metadata(),
        timeout=services.timeout,
    )
    return updated, summary


async def prune_decayed(services: Services, tier: Tier) -> Pruned:
    """Forget every memory of one tier whose strength fell under its threshold (the
    memory service does it as one filtered delete on the indexed expiry)."""
    return await services.memory.prune(tier=tier, timeout=services.timeout)


async def list_scopes(services: Services) -> list[Scope]:
    return [s async for s in services.memory.list_scopes(timeout=services.timeout)]


async def suppress_scope(
    services: Services, scope: Scope, similarity: float, max_memories: int, scan_timeout: float
) -> Suppressed:
    """Merge each cluster of one user's near-duplicate long-term memories into its
    representative (summed strength, union of metadata and source ids)."""
    clusters = await services.memory.scan_for_suppression(
        scope,
        similarity_threshold=similarity,
        max_memories=max_memories,
        timeout=scan_timeout,
    )
    merged = 0
    for cluster in clusters:
        await services.memory.merge(
            scope, cluster.representative_id, cluster.member_ids, timeout=services.timeout
        )
        merged += len(cluster.member_ids)
    return Suppressed(clusters=len(clusters), merged=merged)
