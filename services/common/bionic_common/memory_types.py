"""The memory domain model, shared by the memory service and its callers."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class Tier(enum.StrEnum):
    LONG_TERM = "ltm"
    SHORT_TERM = "stm"


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose memories a call touches: a tenant (one API key) and a user inside it."""

    tenant: str
    user: str


@dataclass(slots=True)
class Memory:
    id: str
    scope: Scope
    role: Role
    tier: Tier
    text: str
    created_at: float
    updated_at: float
    strength: float
    current_strength: float = 0.0
    score: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Recall:
    """The answer to a chat turn's recall: what was stored and what was recalled."""

    stored: Memory | None
    memories: list[Memory]
