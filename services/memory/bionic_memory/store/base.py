"""The storage interface every backend implements (and the congruence suite checks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Payload fields with an index: the tenant (a tenant index where supported), the user,
# the tier, the content hash and the forgetting instants: when a memory leaves
# its tier (expires_at) and, for a long-term memory, when it then leaves the archive
# (archive_expires_at). Both are known when a memory is written, so moving into the
# archive takes no write at all: the archive is the long-term memories past expires_at.
TENANT_FIELD = "tenant"
# Every index costs each deleted point a removal (edge, 200k memories, payload in RAM:
# about 1.2 us per keyword index and 1.3 us per instant index on top of 4.5 us for an
# unindexed point), so only what narrows a query is indexed: the speaker is not (it is
# matched only next to the content hash).
KEYWORD_FIELDS = ("user", "tier", "content_hash")
EXPIRES_FIELD = "expires_at"
ARCHIVE_EXPIRES_FIELD = "archive_expires_at"
INSTANT_FIELDS = (EXPIRES_FIELD, ARCHIVE_EXPIRES_FIELD)


@dataclass(slots=True)
class Point:
    id: str
    payload: dict[str, Any]
    vector: list[float] | None = None
    # Stored with its BM25 vector (lexical.py); False for what is never searched lexically
    # (short-term copies), which then also stays out of the IDF.
    lexical: bool = True


@dataclass(frozen=True, slots=True)
class Where:
    """A backend-neutral filter: every set field must match."""

    tenant: str | None = None
    user: str | None = None
    tier: str | None = None
    role: str | None = None
    content_hash: str | None = None
    # expires_at < expires_before: forgotten by then.
    expires_before: float | None = None
    # expires_at >= alive_at: still remembered then.
    alive_at: float | None = None
    # The same two bounds on archive_expires_at.
    archive_expires_before: float | None = None
    archive_alive_at: float | None = None
    exclude_ids: Sequence[str] = field(default_factory=tuple)

    def ranges(self) -> list[tuple[str, str, float]]:
        """The bounds on forgetting instants, as (field, "lt" or "gte", value)."""
        bounds = (
            (EXPIRES_FIELD, "lt", self.expires_before),
            (EXPIRES_FIELD, "gte", self.alive_at),
            (ARCHIVE_EXPIRES_FIELD, "lt", self.archive_expires_before),
            (ARCHIVE_EXPIRES_FIELD, "gte", self.archive_alive_at),
        )
        return [(key, op, value) for key, op, value in bounds if value is not None]

    def keywords(self) -> list[tuple[str, str]]:
        """The exact-match conditions, as (field, value) pairs."""
        pairs = (
            (TENANT_FIELD, self.tenant),
            ("user", self.user),
            ("tier", self.tier),
            ("role", self.role),
            ("content_hash", self.content_hash),
        )
        return [(key, value) for key, value in pairs if value is not None]


@dataclass(frozen=True, slots=True)
class Search:
    """One query of `search_many`: nearest to `vector` as `search` does, or, with `text`,
    the best BM25 matches of it as `search_text` does."""

    where: Where
    limit: int
    vector: Sequence[float] = ()
    text: str | None = None
    with_vector: bool = False


class MemoryStore(Protocol):
    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points (vector and payload) by id; durable when it returns."""

    def set_payloads(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """For each (point id, fields), replace those top-level payload fields of the point,
        keeping the others; in one request where the backend takes several."""

    def retrieve(self, ids: Sequence[str], with_vector: bool = False) -> list[Point]:
        """The points that exist among `ids`, in no particular order."""

    def search(
        self, where: Where, vector: Sequence[float], limit: int, with_vector: bool = False
    ) -> list[tuple[Point, float]]:
        """The `limit` nearest points matching `where`, best first, with cosine scores."""

    def search_text(
        self, where: Where, text: str, limit: int, with_vector: bool = False
    ) -> list[tuple[Point, float]]:
        """The `limit` best BM25 matches of `text` among points matching `where`, best
        first, with their BM25 scores (IDF over the stored memories); see lexical.py."""

    def search_many(self, searches: Sequence[Search]) -> list[list[tuple[Point, float]]]:
        """Each search's results, in order; in one request where the backend takes several."""

    def scroll(
        self, where: Where, limit: int, offset: str | None, with_vector: bool = False
    ) -> tuple[list[Point], str | None]:
        """A page of points in id order from `offset`, and the next page's offset."""

    def facet(self, key: str, where: Where, limit: int) -> list[tuple[str, int]]:
        """The distinct values of the indexed field `key` among matching points, with counts."""

    def delete(self, ids: Sequence[str]) -> None: ...

    def delete_where(self, where: Where) -> int:
        """Delete every point matching `where`; return how many there were. A backend may
        delete in several steps, so other calls interleave with a long delete; each point
        is deleted only if it still matches `where` when its step runs."""

    def count(self, where: Where) -> int: ...

    def close(self) -> None:
        """Flush to disk and release the store."""
