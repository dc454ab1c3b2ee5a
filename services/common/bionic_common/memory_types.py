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
    ARCHIVE = "archive"


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
    pinned: bool = False
    expires_at: float | None = None  # None: never (pinned)
    summary: str = ""  # the embedded document of a long memory
    source_ids: list[str] = field(default_factory=list)  # memories merged into this one


@dataclass(slots=True)
class Exported:
    """A memory with its vector, as Export streams it and Import takes it."""

    memory: Memory
    vector: list[float]


@dataclass(frozen=True, slots=True)
class TierStats:
    tier: Tier
    count: int
    pinned: int
    strength_p10: float
    strength_p50: float
    strength_p90: float
    strength_max: float
    next_expiries: list[float]


@dataclass(frozen=True, slots=True)
class Pruned:
    forgotten_long_term: int
    forgotten_short_term: int
    archived: int
    forgotten_archive: int


@dataclass(frozen=True, slots=True)
class Cluster:
    representative_id: str
    member_ids: list[str]


@dataclass(slots=True)
class Recall:
    """The answer to a chat turn's recall: what was stored and what was recalled."""

    stored: Memory | None
    memories: list[Memory]
