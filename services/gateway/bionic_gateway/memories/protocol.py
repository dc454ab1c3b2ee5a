"""Request and response models of the memory management API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bionic_common.memory_types import Exported, Memory, Role, Scope, Tier, TierStats
from bionic_gateway.chat.protocol import MAX_RECALL_LIMIT, ChatMessage
from bionic_gateway.json_values import storable

# Metadata kept exactly as sent: what the store cannot hold as it is is a 400.
Metadata = Annotated[dict[str, Any], AfterValidator(storable)]

USER_FIELD = Field(
    "default",
    min_length=1,
    max_length=256,
    description="Whose memories: the OpenAI `user` of the chat requests (default `default`)",
)
MEMORY_EXAMPLE: dict[str, Any] = {
    "id": "5f0c2d64-3b6a-4a53-9a83-2a4c5d6e7f80",
    "object": "memory",
    "user": "u1",
    "role": "user",
    "tier": "ltm",
    "text": "My name is Achen and I love jasmine tea.",
    "summary": "",
    "created_at": 1764240000.0,
    "updated_at": 1764240000.0,
    "strength": 1.0,
    "current_strength": 0.93,
    "score": 0.0,
    "pinned": False,
    "expires_at": 1766918400.0,
    "metadata": {"request_id": "9b1f0f3f6c1d4a0e8b2f"},
    "source_ids": [],
}


class MemoryObject(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [MEMORY_EXAMPLE]})

    id: str
    object: Literal["memory"] = "memory"
    user: str
    role: Role
    tier: Tier
    text: str
    summary: str = Field("", description="The embedded summary of a long memory")
    created_at: float = Field(description="Unix seconds")
    updated_at: float = Field(description="Unix seconds of the last reinforcement or edit")
    strength: float = Field(description="Strength at updated_at")
    current_strength: float = Field(description="Strength now, after cooling")
    score: float = Field(0.0, description="Similarity to the query, for search and recall")
    pinned: bool = False
    expires_at: float | None = Field(description="When it will be forgotten; null: never")
    metadata: dict[str, Any] = Field(default_factory=dict)
    source_ids: list[str] = Field(default_factory=list, description="Memories merged into it")

    @classmethod
    def of(cls, memory: Memory) -> MemoryObject:
        return cls(
            id=memory.id,
            user=memory.scope.user,
            role=memory.role,
            tier=memory.tier,
            text=memory.text,
            summary=memory.summary,
            created_at=memory.created_at,
            updated_at=memory.updated_at,
            strength=memory.strength,
            current_strength=memory.current_strength,
            score=memory.score,
            pinned=memory.pinned,
            expires_at=memory.expires_at,
            metadata=memory.metadata,
            source_ids=memory.source_ids,
        )


class ExportLine(MemoryObject):
    """One line of an export (and of an import): a memory with its vector."""

    vector: list[float] | None = Field(
        None, description="Its embedding; without one, import embeds the text again"
    )
    metadata: Metadata = Field(default_factory=dict)

    @classmethod
    def of_exported(cls, item: Exported) -> ExportLine:
        return cls(**MemoryObject.of(item.memory).model_dump(), vector=item.vector)

    def to_exported(self, scope: Scope, vector: list[float]) -> Exported:
        """The memory for `scope`: the line's own user and tenant are never trusted."""
        return Exported(
            memory=Memory(
                id=self.id,
                scope=scope,
                role=self.role,
                tier=self.tier,
                text=self.text,
                created_at=self.created_at,
                updated_at=self.updated_at,
                strength=self.strength,
                metadata=self.metadata,
                pinned=self.pinned,
                expires_at=self.expires_at,
                summary=self.summary,
                source_ids=self.source_ids,
            ),
            vector=vector,
        )


class MemoryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MemoryObject]
    has_more: bool = False
    next_cursor: str | None = Field(None, description="Pass as `after` for the next page")


class AddMemory(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"user": "u1", "text": "I am allergic to peanuts.", "pinned": True}]
        },
    )
    user: str = USER_FIELD
    text: str = Field(min_length=1, max_length=100_000)
    role: Role = Role.USER
    pinned: bool = False
    metadata: Metadata = Field(default_factory=dict)


class PatchMemory(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"pinned": True}, {"text": "I love oolong tea."}]},
    )
    text: str | None = Field(None, min_length=1, max_length=100_000)
    pinned: bool | None = None
    metadata: Metadata | None = Field(
        None, description="Merged into the memory's metadata; a null value removes a key"
    )


class SearchMemories(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user": "u1", "query": "favourite drink", "limit": 5}]},
    )
    user: str = USER_FIELD
    query: str = Field(min_length=1, max_length=100_000)
    limit: int = Field(10, ge=1, le=100)
    tier: Tier | None = Field(None, description="Default: long-term memory")
    min_score: float = Field(0.0, ge=-1.0, le=1.0)


class RecallPreview(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "user": "u1",
                    "messages": [{"role": "user", "content": "What do I like to drink?"}],
                }
            ]
        },
    )
    user: str = USER_FIELD
    messages: list[ChatMessage] = Field(
        min_length=1, description="The conversation, as a chat completion would send it"
    )
    recall_limit: int | None = Field(None, ge=1, le=MAX_RECALL_LIMIT)


class RecallResult(BaseModel):
    object: Literal["memory.recall"] = "memory.recall"
    memories: list[MemoryObject]
    system_message: dict[str, Any] | None = Field(
        description="The system message chat would add; null when nothing is recalled"
    )
    messages: list[dict[str, Any]] = Field(description="The messages the upstream would get")


class Deleted(BaseModel):
    id: str
    object: Literal["memory.deleted"] = "memory.deleted"
    deleted: bool = True


class Forgotten(BaseModel):
    object: Literal["memory.forgotten"] = "memory.forgotten"
    user: str
    deleted: int


class Imported(BaseModel):
    object: Literal["memory.import"] = "memory.import"
    user: str
    imported: int
    skipped: int


class TierStatsObject(BaseModel):
    tier: Tier
    count: int
    pinned: int
    strength_p10: float
    strength_p50: float
    strength_p90: float
    strength_max: float
    next_expiries: list[float]

    @classmethod
    def of(cls, stats: TierStats) -> TierStatsObject:
        return cls.model_validate(stats, from_attributes=True)


class Stats(BaseModel):
    object: Literal["memory.stats"] = "memory.stats"
    user: str
    tiers: list[TierStatsObject]


class ServerStats(BaseModel):
    object: Literal["admin.stats"] = "admin.stats"
    tenants: int = Field(description="Tenants holding memories")
    users: int = Field(description="Users (of all tenants) holding memories")
