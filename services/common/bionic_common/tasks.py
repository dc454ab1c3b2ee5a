"""The contract between task producers (the gateway, beat) and the decay worker.

Every task takes one small JSON-serialisable message and is idempotent: a message
delivered twice (a redelivery after a crash, a retried publish) changes nothing twice.
"""

from __future__ import annotations

from typing import Any, TypedDict

# Store an assistant reply after the response was sent, and reinforce what it relates to.
REMEMBER_EXCHANGE = "memory.remember_exchange"
# Store a user message the chat path could not store (memory was degraded at the time).
REMEMBER_USER_TURN = "memory.remember_user_turn"
# Give a long memory (already stored, embedded from its head) an LLM summary.
SUMMARIZE = "memory.summarize"
# Beat: forget what decayed in one tier ("stm" or "ltm"); one filtered delete.
PRUNE_DECAYED = "memory.prune_decayed"
# Beat: fan out one suppress_scope task per (tenant, user) that holds memories.
SUPPRESS_CLUSTERS = "memory.suppress_clusters"
# Merge the near-duplicate long-term memories of one (tenant, user).
SUPPRESS_SCOPE = "memory.suppress_scope"


class ExchangeMessage(TypedDict):
    """What `memory.remember_exchange` takes."""

    tenant: str
    user: str
    reply: str
    # Unique per chat turn: a redelivered task with the same key changes nothing twice.
    request_id: str
    metadata: dict[str, Any]


class UserTurnMessage(TypedDict):
    """What `memory.remember_user_turn` takes."""

    tenant: str
    user: str
    text: str
    # Unique per chat turn, as for ExchangeMessage.
    request_id: str
    metadata: dict[str, Any]


class SummarizeMessage(TypedDict):
    """What `memory.summarize` takes: which memory to summarise (it is read by id)."""

    tenant: str
    user: str
    memory_id: str


class ScopeMessage(TypedDict):
    """What `memory.suppress_scope` takes."""

    tenant: str
    user: str
