"""The contract between task producers (the gateway) and the decay worker."""

from __future__ import annotations

from typing import Any, TypedDict

REMEMBER_EXCHANGE = "memory.remember_exchange"


class ExchangeMessage(TypedDict):
    """What `memory.remember_exchange` takes: small values only, JSON-serialisable."""

    tenant: str
    user: str
    reply: str
    # Unique per chat turn: a redelivered task with the same key changes nothing twice.
    request_id: str
    metadata: dict[str, Any]
