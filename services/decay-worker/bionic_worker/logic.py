"""What the tasks do, as plain functions over injected clients."""

from __future__ import annotations

from dataclasses import dataclass

from bionic_common.clients import EmbedderClient, MemoryClient
from bionic_common.memory_types import Memory, Role, Scope
from bionic_common.tasks import ExchangeMessage


@dataclass(frozen=True, slots=True)
class Services:
    embedder: EmbedderClient
    memory: MemoryClient
    timeout: float


async def remember_exchange(services: Services, message: ExchangeMessage) -> Memory:
    """Store the assistant's reply of one chat turn as a long-term memory."""
    scope = Scope(tenant=message["tenant"], user=message["user"])
    embedded = await services.embedder.embed(
        [message["reply"]], "document", timeout=services.timeout
    )
    memory, _ = await services.memory.remember(
        scope,
        Role.ASSISTANT,
        message["reply"],
        embedded.vectors[0],
        metadata=message["metadata"],
        idempotency_key=message["request_id"],
        timeout=services.timeout,
    )
    return memory
