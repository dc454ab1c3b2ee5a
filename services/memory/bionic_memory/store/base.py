"""The storage interface every backend implements (and the congruence suite checks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Payload fields with an index: the tenant (a tenant index where supported), the user,
# the tier, the forgetting instant and the content hash.
KEYWORD_FIELDS = ("user", "tier", "content_hash")
TENANT_FIELD = "tenant"
EXPIRES_FIELD = "expires_at"


@dataclass(slots=True)
class Point:
    id: str
    payload: dict[str, Any]
    vector: list[float] | None = None


@dataclass(frozen=True, slots=True)
class Where:
    """A backend-neutral filter: every set field must match."""

    tenant: str | None = None
    user: str | None = None
    tier: str | None = None
    expires_before: float | None = None
    exclude_ids: Sequence[str] = field(default_factory=tuple)


class MemoryStore(Protocol):
    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points (vector and payload) by id."""

    def retrieve(self, ids: Sequence[str], with_vector: bool = False) -> list[Point]:
        """The points that exist among `ids`, in no particular order."""

    def search(
        self, where: Where, vector: Sequence[float], limit: int, with_vector: bool = False
    ) -> list[tuple[Point, float]]:
        """The `limit` nearest points matching `where`, best first, with cosine scores."""

    def scroll(
        self, where: Where, limit: int, offset: str | None
    ) -> tuple[list[Point], str | None]:
        """A page of points in id order from `offset`, and the next page's offset."""

    def delete(self, ids: Sequence[str]) -> None: ...

    def delete_where(self, where: Where) -> int:
        """Delete every point matching `where`; return how many there were."""

    def count(self, where: Where) -> int: ...

    def close(self) -> None:
        """Flush to disk and release the store."""
