"""The memory logic: store, reinforce, recall, forget and manage, on any `MemoryStore`.

Every operation takes the scope it acts in and never reads or changes another scope's
memories. Every operation that depends on time takes `now` (0: the service's clock), so
history can be replayed on its own clock.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from bionic_common.memory_types import (
    Cluster,
    Exported,
    Memory,
    Pruned,
    Recall,
    Role,
    Scope,
    Tier,
    TierStats,
)
from bionic_memory.clusters import near_duplicate_groups
from bionic_memory.config import MemorySettings
from bionic_memory.errors import InvalidArgument, NotFound
from bionic_memory.forgetting import merged, reinforced, tier_laws
from bionic_memory.recall import (
    Candidate,
    RecallParams,
    recall_selection,
    reinforcement_shares,
)
from bionic_memory.records import (
    NEVER,
    content_hash,
    decode_page_token,
    encode_page_token,
    exact,
    is_memory_id,
    new_id,
    rehomed_id,
    scope_key,
    short_term_id,
)
from bionic_memory.relevance import relevance_first, with_lexical
from bionic_memory.salience import initial_strength
from bionic_memory.store.base import (
    ARCHIVE_EXPIRES_FIELD,
    EXPIRES_FIELD,
    MemoryStore,
    Point,
    Search,
    Where,
)
from bionic_memory.validation import Validator

MAX_OP_KEYS = 32  # idempotency keys remembered per memory
LOCK_STRIPES = 64
SCAN_PAGE = 1000
EXPORT_PAGE = 256
NEXT_EXPIRIES = 5
MAX_FACET = 1_000_000
# A recall candidate's vector where the selection does not use it.
NO_VECTOR = np.empty(0, dtype=np.float32)
# Payload fields that are the store's business, not part of an exported memory.
INTERNAL_FIELDS = ("op_keys",)
# What a short-term copy does not carry over from its long-term memory: the store's own
# fields, the content hash (only long-term memory is deduplicated) and the archive's
# instant (a copy is never archived). Each field less is less to write per copy.
NOT_COPIED = (*INTERNAL_FIELDS, "content_hash", ARCHIVE_EXPIRES_FIELD)


class MemoryService:
    def __init__(
        self,
        store: MemoryStore,
        settings: MemorySettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._check = Validator(settings)
        # Each tier's forgetting law (forgetting.py); archived memories keep cooling along
        # the long-term curve.
        self._cooling = tier_laws(settings)
        self._params = RecallParams(
            limit=settings.recall_limit,
            retrieval_multiplier=settings.retrieval_multiplier,
            cluster_multiplier=settings.cluster_multiplier,
            temperature=settings.reinforcement_temperature,
        )
        # Read-modify-write of one scope's memories is serialised; scopes run in parallel.
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        # Where the previous Prune of long-term memory counted archived memories up to.
        self._prune_lock = threading.Lock()
        self._archived_until: float | None = None

    # --- the chat path -----------------------------------------------------------------

    def recall(
        self,
        scope: Scope,
        text: str,
        vector: Sequence[float],
        limit: int = 0,
        metadata: dict[str, Any] | None = None,
        dry_run: bool = False,
        now: float = 0.0,
        idempotency_key: str = "",
    ) -> Recall:
        """Store the user's message (unless a dry run), then recall what relates to it:
        long-term hits are reinforced and promoted into short-term memory, and short-term
        memory is searched with cluster suppression. A store whose idempotency key was
        already applied (by a Recall or a Remember) stores and reinforces nothing."""
        self._check.scope(scope)
        self._check.text(text)
        self._check.vector(vector)
        self._check.metadata(metadata or {})
        limit = self._check.limit(
            limit, self._settings.recall_limit, self._settings.max_recall_limit
        )
        params = replace(self._params, limit=limit)
        now = self._now(now)
        with self._lock(scope):
            stored, applied = None, False
            if not dry_run:
                stored, _, applied = self._write(
                    scope, Role.USER, text, vector, metadata or {}, idempotency_key, False, now
                )
            # Only the original selection clusters the candidates by their vectors.
            clustered = self._settings.selection == "original"
            n = params.long_term_candidates
            related = self._searches(self._related_where(scope, stored, now), text, vector, n)
            archived = (
                self._searches(self._where(scope, Tier.ARCHIVE, now, alive=True), text, vector, n)
                if self._settings.archive
                else []
            )
            where = self._where(scope, Tier.SHORT_TERM, now, alive=True)
            found = self._store.search_many(
                [
                    *related,
                    *archived,
                    Search(where, params.short_term_candidates, vector, with_vector=clustered),
                ]
            )
            hits = self._matched(found[: len(related)], vector, n)
            if archived:
                recognised = self._matched(found[len(related) : -1], vector, n)
                hits = self._with_recognised(hits, recognised, n)
            short_term = found[-1]
            promoted = self._promote(hits, params, now, write=applied)
        scored = {p.id: (p, s) for p, s in short_term}
        scored.update((p.id, (p, s)) for p, s in promoted)
        candidates = [
            Candidate(
                item=point,
                vector=np.asarray(point.vector, dtype=np.float32) if clustered else NO_VECTOR,
                score=score,
                strength=self._current(point.payload, now),
                created_at=point.payload["created_at"],
            )
            for point, score in scored.values()
        ]
        if self._settings.selection == "relevance_first":
            chosen = relevance_first(candidates, limit, self._settings.strength_weight)
        else:
            chosen = recall_selection(candidates, params)
        memories = [self._memory(c.item, now, c.score, strength=c.strength) for c in chosen]
        return Recall(stored=stored, memories=memories)

    def _related_where(self, scope: Scope, stored: Memory | None, now: float) -> Where:
        """The long-term memories a message may relate to: all but itself."""
        excluded = (stored.id,) if stored else ()
        return self._where(scope, Tier.LONG_TERM, now, alive=True, exclude_ids=excluded)

    def _searches(
        self, where: Where, text: str, vector: Sequence[float], limit: int
    ) -> list[Search]:
        """What `_matched` ranks: the nearest by cosine, and the best BM25 matches when
        lexical_weight is set; with vectors."""
        dense = Search(where, limit, vector, with_vector=True)
        if not self._settings.lexical_weight:
            return [dense]
        return [dense, Search(where, limit, text=text, with_vector=True)]

    def _matched(
        self, found: list[list[tuple[Point, float]]], vector: Sequence[float], limit: int
    ) -> list[tuple[Point, float]]:
        """The best `limit` of what `_searches` found: by cosine, plus a BM25 bonus when
        lexical_weight is set (relevance.with_lexical)."""
        if len(found) == 1:
            return found[0]
        dense, lexical = found
        return with_lexical(dense, lexical, vector, self._settings.lexical_weight, limit)

    def _with_recognised(
        self,
        hits: list[tuple[Point, float]],
        archived: list[tuple[Point, float]],
        limit: int,
    ) -> list[tuple[Point, float]]:
        """Long-term hits joined by the archived memories (`archived`, as `_matched`
        ranks them) the message cues strongly (relevance >= archive_min_score):
        recognition without recall. They compete on relevance alone; reinforcing one
        brings it back into long-term memory."""
        cued = [hit for hit in archived if hit[1] >= self._settings.archive_min_score]
        if not cued:
            return hits
        return sorted([*hits, *cued], key=lambda hit: hit[1], reverse=True)[:limit]

    def _promote(
        self, hits: list[tuple[Point, float]], params: RecallParams, now: float, write: bool
    ) -> list[tuple[Point, float]]:
        """Reinforce long-term hits by their share of relevance and copy them into
        short-term memory (reinforcing copies already there). Returns the short-term
        copies as they are (or, on a dry run, would be) after the turn."""
        gain = self._settings.reinforcement_gain
        shares = [
            gain * share
            for share in reinforcement_shares([score for _, score in hits], params.temperature)
        ]
        copy_ids = [short_term_id(point.id) for point, _ in hits]
        existing = {p.id: p for p in self._store.retrieve(copy_ids)}
        promoted, copies = [], []
        changes: list[tuple[str, dict[str, Any]]] = []  # reinforcements, written at once
        for (hit, score), share, copy_id in zip(hits, shares, copy_ids, strict=True):
            copy = existing.get(copy_id)
            if copy is not None and copy.payload["expires_at"] >= now:
                fields = self._reinforced(copy.payload, share, now)
                after = Point(copy_id, {**copy.payload, **fields}, hit.vector)
                changes.append((copy_id, fields))
            else:
                payload = {
                    key: value for key, value in hit.payload.items() if key not in NOT_COPIED
                }
                payload.update(tier=Tier.SHORT_TERM.value, strength=1.0, updated_at=now)
                payload.update(self._expiries(payload))
                after = Point(copy_id, payload, hit.vector, lexical=False)
                copies.append(after)
            if write:
                changes.append((hit.id, self._reinforced(hit.payload, share, now)))
            promoted.append((after, score))
        if write:
            self._store.set_payloads(changes)
            self._store.upsert(copies)
        return promoted

    def remember(
        self,
        scope: Scope,
        role: Role,
        text: str,
        vector: Sequence[float],
        metadata: dict[str, Any] | None = None,
        idempotency_key: str = "",
        pinned: bool = False,
        now: float = 0.0,
        reinforce_related: bool = False,
    ) -> tuple[Memory, bool]:
        """Store one memory in long-term memory; same content reinforces the existing one.

        With `reinforce_related`, the memories it relates to are reinforced and promoted
        as a recall would; a write whose idempotency key was already applied does neither.
        """
        self._check.scope(scope)
        self._check.text(text)
        self._check.vector(vector)
        self._check.metadata(metadata or {})
        now = self._now(now)
        with self._lock(scope):
            memory, created, applied = self._write(
                scope, role, text, vector, metadata or {}, idempotency_key, pinned, now
            )
            if reinforce_related and applied:
                n = self._params.long_term_candidates
                searches = self._searches(self._related_where(scope, memory, now), text, vector, n)
                hits = self._matched(self._store.search_many(searches), vector, n)
                self._promote(hits, self._params, now, write=True)
        return memory, created

    def _write(
        self,
        scope: Scope,
        role: Role,
        text: str,
        vector: Sequence[float],
        metadata: dict[str, Any],
        key: str,
        pinned: bool,
        now: float,
    ) -> tuple[Memory, bool, bool]:
        """Store or reinforce; the caller holds the scope's lock. Returns the memory,
        whether it is new, and whether the write was applied (its key was not seen)."""
        digest = content_hash(text)
        same, _ = self._store.scroll(
            Where(
                tenant=scope.tenant,
                user=scope.user,
                tier=Tier.LONG_TERM.value,
                role=role.value,
                content_hash=digest,
            ),
            1,
            None,
        )
        if same:
            point = same[0]
            keys: list[str] = list(point.payload.get("op_keys", []))
            if key and key in keys:
                return self._memory(point, now), False, False
            fields = self._reinforced(point.payload, 1.0, now)
            fields.update(
                metadata={**point.payload.get("metadata", {}), **metadata},
                pinned=point.payload["pinned"] or pinned,
            )
            fields.update(self._expiries({**point.payload, **fields}))
            if key:
                fields["op_keys"] = [*keys, key][-MAX_OP_KEYS:]
            self._store.set_payloads([(point.id, fields)])
            point.payload.update(fields)
            return self._memory(point, now), False, True
        payload: dict[str, Any] = {
            "tenant": scope.tenant,
            "user": scope.user,
            "role": role.value,
            "tier": Tier.LONG_TERM.value,
            "text": text,
            "summary": "",
            "content_hash": digest,
            "created_at": now,
            "updated_at": now,
            "strength": exact(initial_strength(text, self._settings.salience_gain)),
            "pinned": pinned,
            "metadata": metadata,
            "source_ids": [],
        }
        if key:
            payload["op_keys"] = [key]
        payload.update(self._expiries(payload))
        point = Point(id=new_id(), payload=payload, vector=list(vector))
        self._store.upsert([point])
        return self._memory(point, now), True, True

    # --- reading -----------------------------------------------------------------------

    def search(
        self,
        scope: Scope,
        vector: Sequence[float],
        limit: int = 0,
        tier: Tier | None = None,
        min_score: float = 0.0,
        now: float = 0.0,
    ) -> list[Memory]:
        """The memories nearest `vector` that are still remembered, best first."""
        self._check.scope(scope)
        self._check.vector(vector)
        limit = self._check.limit(limit, self._settings.recall_limit, self._settings.max_page_size)
        now = self._now(now)
        hits = self._store.search(
            self._where(scope, tier or Tier.LONG_TERM, now, alive=True), vector, limit
        )
        return [self._memory(p, now, score) for p, score in hits if score >= min_score]

    def get(self, scope: Scope, memory_id: str, now: float = 0.0) -> Memory:
        self._check.scope(scope)
        self._check.memory_id(memory_id)
        return self._memory(self._owned(scope, memory_id), self._now(now))

    def list_page(
        self,
        scope: Scope,
        page_size: int,
        page_token: str,
        tier: Tier | None,
        now: float = 0.0,
    ) -> tuple[list[Memory], str]:
        """A page of the scope's memories in a stable order, and the next page's token."""
        self._check.scope(scope)
        size = self._check.limit(page_size, 50, self._settings.max_page_size)
        offset = decode_page_token(scope, page_token) if page_token else None
        now = self._now(now)
        points, next_offset = self._store.scroll(self._where(scope, tier, now), size, offset)
        token = encode_page_token(scope, next_offset) if next_offset else ""
        return [self._memory(p, now) for p in points], token

    def stats(self, scope: Scope, now: float = 0.0) -> list[TierStats]:
        """Per tier: counts, current strength quantiles and the soonest expiries."""
        self._check.scope(scope)
        now = self._now(now)
        strengths: dict[Tier, list[float]] = {tier: [] for tier in Tier}
        pinned = dict.fromkeys(Tier, 0)
        expiries: dict[Tier, list[float]] = {tier: [] for tier in Tier}
        for point in self._scan(self._where(scope, None, now), with_vector=False):
            tier = self._tier(point.payload, now)
            strengths[tier].append(self._current(point.payload, now))
            if point.payload["pinned"]:
                pinned[tier] += 1
            elif (leaves_at := self._leaves_at(point.payload, now)) >= now:
                expiries[tier].append(leaves_at)
        result = []
        for tier in Tier:
            values = np.asarray(strengths[tier] or [0.0])
            p10, p50, p90 = np.quantile(values, [0.1, 0.5, 0.9]).tolist()
            result.append(
                TierStats(
                    tier=tier,
                    count=len(strengths[tier]),
                    pinned=pinned[tier],
                    strength_p10=p10,
                    strength_p50=p50,
                    strength_p90=p90,
                    strength_max=float(values.max()),
                    next_expiries=sorted(expiries[tier])[:NEXT_EXPIRIES],
                )
            )
        return result

    # --- editing -----------------------------------------------------------------------

    def update(
        self,
        scope: Scope,
        memory_id: str,
        text: str | None = None,
        vector: Sequence[float] | None = None,
        pinned: bool | None = None,
        metadata: dict[str, Any] | None = None,
        now: float = 0.0,
    ) -> Memory:
        """Edit the text (with its new vector), pin or unpin, merge metadata (a None value
        removes a key). A pinned memory neither cools nor expires; unpinning starts it
        cooling from its strength at that moment, as a fresh memory of that strength: on a
        fitted curve that is its steep early part (unlike a reinforcement or a merge, which
        keep an old memory's age), because letting go of a pin starts forgetting anew."""
        self._check.scope(scope)
        self._check.memory_id(memory_id)
        if text is not None:
            self._check.text(text)
            if not vector:
                raise InvalidArgument("a new text needs its new vector")
            self._check.vector(vector)
        elif vector:
            raise InvalidArgument("a vector can only be changed together with the text")
        self._check.metadata(metadata or {})
        now = self._now(now)
        with self._lock(scope):
            point = self._owned(scope, memory_id)
            payload = point.payload
            if pinned is not None and pinned != payload["pinned"]:
                payload.update(
                    strength=exact(self._current(payload, now)), updated_at=now, pinned=pinned
                )
            if metadata:
                payload["metadata"] = _merged(payload.get("metadata", {}), metadata)
            if text is not None and vector:
                payload.update(text=text, content_hash=content_hash(text), summary="")
                payload.update(self._expiries(payload))
                self._store.upsert([Point(memory_id, payload, list(vector))])
                self._drop_short_term_copy(payload, memory_id)
            else:
                payload.update(self._expiries(payload))
                self._store.set_payloads([(memory_id, payload)])
        return self._memory(point, now)

    def set_summary(
        self,
        scope: Scope,
        memory_id: str,
        summary: str,
        vector: Sequence[float],
        metadata: dict[str, Any] | None = None,
        now: float = 0.0,
    ) -> Memory:
        """The summary becomes what recall matches against; the full text stays."""
        self._check.scope(scope)
        self._check.memory_id(memory_id)
        self._check.text(summary, "summary")
        self._check.vector(vector)
        self._check.metadata(metadata or {})
        with self._lock(scope):
            point = self._owned(scope, memory_id)
            point.payload["summary"] = summary
            point.payload["metadata"] = _merged(point.payload.get("metadata", {}), metadata or {})
            self._store.upsert([Point(memory_id, point.payload, list(vector))])
            self._drop_short_term_copy(point.payload, memory_id)
        return self._memory(point, self._now(now))

    def delete(self, scope: Scope, memory_id: str) -> bool:
        """Delete a memory (a long-term memory takes its short-term copy with it)."""
        self._check.scope(scope)
        self._check.memory_id(memory_id)
        with self._lock(scope):
            try:
                point = self._owned(scope, memory_id)
            except NotFound:
                return False
            self._store.delete([memory_id])
            self._drop_short_term_copy(point.payload, memory_id)
        return True

    def forget_user(self, scope: Scope) -> int:
        """Delete every memory of the scope, every tier."""
        self._check.scope(scope)
        with self._lock(scope):
            return self._store.delete_where(self._where(scope, None, 0.0))

    def _drop_short_term_copy(self, payload: dict[str, Any], memory_id: str) -> None:
        if payload["tier"] == Tier.LONG_TERM.value:
            self._store.delete([short_term_id(memory_id)])

    # --- export and import -------------------------------------------------------------

    def export_page(
        self, scope: Scope, offset: str | None, now: float = 0.0
    ) -> tuple[list[Exported], str | None]:
        """A page of the scope's memories with their vectors, and the next page's offset."""
        self._check.scope(scope)
        now = self._now(now)
        points, next_offset = self._store.scroll(
            self._where(scope, None, now), EXPORT_PAGE, offset, with_vector=True
        )
        return [Exported(self._memory(p, now), list(p.vector or ())) for p in points], next_offset

    def import_batch(self, scope: Scope, items: Sequence[Exported]) -> tuple[int, int]:
        """Restore memories into `scope`, keeping ids, times, strengths and metadata.

        A memory whose id the scope already holds is skipped (so an import can be
        repeated); one whose id another scope holds gets an id of its own. Returns
        (imported, skipped). The whole batch is checked before any of it is written.
        """
        self._check.scope(scope)
        for index, item in enumerate(items):
            try:
                self._check_exported(item)
            except InvalidArgument as exc:
                raise InvalidArgument(f"import item {index}: {exc}") from exc
        with self._lock(scope):
            wanted = [m.memory.id if is_memory_id(m.memory.id) else new_id() for m in items]
            owners = {p.id: p.payload for p in self._store.retrieve(wanted)}
            ids = [
                rehomed_id(scope, i) if i in owners and not self._owns(scope, owners[i]) else i
                for i in wanted
            ]
            rehomed = [i for i, w in zip(ids, wanted, strict=True) if i != w]
            owners.update((p.id, p.payload) for p in self._store.retrieve(rehomed))
            points = {}
            for memory_id, item in zip(ids, items, strict=True):
                if memory_id not in owners:
                    points[memory_id] = Point(
                        memory_id,
                        self._imported_payload(scope, item.memory),
                        list(item.vector),
                        lexical=item.memory.tier != Tier.SHORT_TERM,
                    )
            self._store.upsert(list(points.values()))
        return len(points), len(items) - len(points)

    def _check_exported(self, item: Exported) -> None:
        memory = item.memory
        self._check.text(memory.text)
        self._check.vector(item.vector)
        self._check.metadata(memory.metadata)
        self._check.instant(memory.created_at, "created_at")
        self._check.instant(memory.updated_at, "updated_at")
        if not 0 <= memory.strength < float("inf"):
            raise InvalidArgument("strength must be a finite, non-negative number")

    def _imported_payload(self, scope: Scope, memory: Memory) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "tenant": scope.tenant,
            "user": scope.user,
            "role": memory.role.value,
            # An archived memory is a long-term one past its expiry (see _where).
            "tier": Tier.SHORT_TERM.value
            if memory.tier == Tier.SHORT_TERM
            else Tier.LONG_TERM.value,
            "text": memory.text,
            "summary": memory.summary,
            "content_hash": content_hash(memory.text),
            "created_at": exact(memory.created_at),
            "updated_at": exact(memory.updated_at),
            "strength": exact(memory.strength),
            "pinned": memory.pinned,
            "metadata": memory.metadata,
            "source_ids": list(memory.source_ids),
        }
        payload.update(self._expiries(payload))
        return payload

    # --- the worker's operations ---------------------------------------------------------

    def prune(self, now: float = 0.0, tier: Tier | None = None) -> Pruned:
        """Forget every memory whose strength fell under its tier's threshold by `now`:
        one filtered delete per tier on its indexed forgetting instant, whose cost grows
        with what is forgotten, not with what is kept. The store carries it out in
        bounded chunks (`MemoryStore.delete_where`), so Recall and Remember are served
        while a large Prune runs.

        With the archive, nothing moves: a long-term memory is in the archive from its
        expires_at on (see `_where`), and leaves it at its archive_expires_at. `archived`
        counts the long-term memories that expired since the previous Prune of long-term
        memory (by this process; its first counts every expired one)."""
        now = self._now(now)
        tiers = [tier] if tier else list(Tier)
        pruned = dict.fromkeys(Tier, 0)
        archived = 0
        if Tier.SHORT_TERM in tiers:
            pruned[Tier.SHORT_TERM] = self._store.delete_where(
                Where(tier=Tier.SHORT_TERM.value, expires_before=now)
            )
        if not self._settings.archive:
            if Tier.LONG_TERM in tiers:
                pruned[Tier.LONG_TERM] = self._store.delete_where(
                    Where(tier=Tier.LONG_TERM.value, expires_before=now)
                )
        else:
            if Tier.LONG_TERM in tiers:
                with self._prune_lock:
                    since, self._archived_until = (
                        self._archived_until,
                        max(now, self._archived_until or now),
                    )
                archived = self._store.count(
                    Where(tier=Tier.LONG_TERM.value, expires_before=now, alive_at=since)
                )
            if Tier.ARCHIVE in tiers:
                pruned[Tier.ARCHIVE] = self._store.delete_where(
                    Where(tier=Tier.LONG_TERM.value, archive_expires_before=now)
                )
        return Pruned(
            forgotten_long_term=pruned[Tier.LONG_TERM],
            forgotten_short_term=pruned[Tier.SHORT_TERM],
            archived=archived,
            forgotten_archive=pruned[Tier.ARCHIVE],
        )

    def tier_sizes(self) -> dict[Tier, int]:
        """Memories held per tier now, over every scope (forgotten ones not yet pruned
        included), counted on the indexes."""
        now = self._clock()
        return {tier: self._store.count(self._where(None, tier, now)) for tier in Tier}

    def list_scopes(self, tenant: str = "") -> list[Scope]:
        """Every scope that holds memories (of one tenant, if given)."""
        tenants = (
            [tenant] if tenant else [t for t, _ in self._store.facet("tenant", Where(), MAX_FACET)]
        )
        return [
            Scope(t, user)
            for t in tenants
            for user, _ in self._store.facet("user", Where(tenant=t), MAX_FACET)
        ]

    def scan_for_suppression(
        self, scope: Scope, similarity_threshold: float = 0.0, max_memories: int = 0
    ) -> tuple[list[Cluster], int]:
        """Clusters of near-duplicate long-term memories among the newest `max_memories`,
        each led by its strongest member; and how many memories were scanned."""
        self._check.scope(scope)
        if not 0 <= similarity_threshold <= 1:
            raise InvalidArgument("similarity_threshold must be within [0, 1]")
        threshold = similarity_threshold or self._settings.duplicate_similarity
        limit = max_memories or self._settings.max_scan_memories
        points = sorted(
            self._scan(self._where(scope, Tier.LONG_TERM, self._clock()), with_vector=True),
            key=lambda p: p.payload["created_at"],
            reverse=True,
        )[:limit]
        if len(points) < 2:
            return [], len(points)
        now = self._clock()
        order = sorted(
            range(len(points)), key=lambda i: self._current(points[i].payload, now), reverse=True
        )
        groups = near_duplicate_groups(np.asarray([p.vector for p in points]), order, threshold)
        clusters = [Cluster(points[g[0]].id, [points[i].id for i in g[1:]]) for g in groups]
        return clusters, len(points)

    def merge(
        self, scope: Scope, representative_id: str, member_ids: Sequence[str], now: float = 0.0
    ) -> Memory:
        """Merge members into the representative: the strengths add up (as of `now`, and
        on a fitted curve from the oldest origin on: forgetting.merged), the metadata is
        the union (the representative's wins), the source ids accumulate, and the members
        are deleted. Members already gone are skipped."""
        self._check.scope(scope)
        self._check.memory_id(representative_id)
        for member_id in member_ids:
            self._check.memory_id(member_id)
        now = self._now(now)
        with self._lock(scope):
            point = self._owned(scope, representative_id)
            payload = point.payload
            members = [
                p
                for p in self._store.retrieve([m for m in member_ids if m != representative_id])
                if self._owns(scope, p.payload)
                and self._tier(p.payload, now) == self._tier(payload, now)
            ]
            if not members:
                return self._memory(point, now)
            metadata: dict[str, Any] = {}
            sources = list(payload.get("source_ids", []))
            for member in members:
                metadata.update(member.payload.get("metadata", {}))
                sources += [member.id, *member.payload.get("source_ids", [])]
            everyone = [point, *members]
            pinned = any(p.payload["pinned"] for p in everyone)
            if pinned:  # no cooling: the strengths as they are, cooling from `now` if unpinned
                strength, origin = sum(self._current(p.payload, now) for p in everyone), now
            else:
                strength, origin = merged(
                    self._cooling[Tier(payload["tier"])],
                    [(p.payload["strength"], p.payload["updated_at"]) for p in everyone],
                    now,
                )
            payload.update(
                strength=exact(strength),
                updated_at=exact(origin),
                pinned=pinned,
                metadata={**metadata, **payload.get("metadata", {})},
                source_ids=list(dict.fromkeys(sources)),
            )
            payload.update(self._expiries(payload))
            self._store.set_payloads([(representative_id, payload)])
            gone = [p.id for p in members]
            if payload["tier"] == Tier.LONG_TERM.value:
                gone += [short_term_id(i) for i in [representative_id, *gone]]
            self._store.delete(gone)
        return self._memory(point, now)

    # --- helpers -----------------------------------------------------------------------

    def _now(self, now: float) -> float:
        self._check.instant(now, "now")
        return exact(now or self._clock())

    def _lock(self, scope: Scope) -> threading.Lock:
        stripe = int.from_bytes(hashlib.blake2b(scope_key(scope).encode(), digest_size=4).digest())
        return self._locks[stripe % LOCK_STRIPES]

    def _where(
        self,
        scope: Scope | None,
        tier: Tier | None,
        now: float,
        alive: bool = False,
        exclude_ids: Sequence[str] = (),
    ) -> Where:
        """The memories of `scope` (of every scope if None) in `tier` (any if None) as the
        tiers are at `now`; with `alive`, only those still remembered then.

        Only short-term and long-term memories are stored as such. With the archive, a
        long-term memory past its expires_at is in the archive (long-term memory is only
        the ones not past it) until its archive_expires_at; without it, no memory is."""
        where = Where(
            tenant=scope.tenant if scope else None,
            user=scope.user if scope else None,
            exclude_ids=exclude_ids,
        )
        if tier == Tier.SHORT_TERM:
            return replace(where, tier=tier.value, alive_at=now if alive else None)
        if tier == Tier.LONG_TERM:
            alive = alive or self._settings.archive
            return replace(where, tier=tier.value, alive_at=now if alive else None)
        if tier == Tier.ARCHIVE:
            if not self._settings.archive:
                return replace(where, tier=tier.value)  # no memory is stored in this tier
            return replace(
                where,
                tier=Tier.LONG_TERM.value,
                expires_before=now,
                archive_alive_at=now if alive else None,
            )
        return where

    def _tier(self, payload: dict[str, Any], now: float) -> Tier:
        """The tier a memory is in at `now` (see `_where`)."""
        if payload["tier"] == Tier.SHORT_TERM.value:
            return Tier.SHORT_TERM
        if self._settings.archive and payload[EXPIRES_FIELD] < now:
            return Tier.ARCHIVE
        return Tier.LONG_TERM

    @staticmethod
    def _owns(scope: Scope, payload: dict[str, Any]) -> bool:
        return bool(payload.get("tenant") == scope.tenant and payload.get("user") == scope.user)

    def _owned(self, scope: Scope, memory_id: str) -> Point:
        found = self._store.retrieve([memory_id])
        if not found or not self._owns(scope, found[0].payload):
            raise NotFound(f"no memory {memory_id} in this scope")
        return found[0]

    def _scan(self, where: Where, with_vector: bool) -> list[Point]:
        points: list[Point] = []
        offset = None
        while True:
            page, offset = self._store.scroll(where, SCAN_PAGE, offset, with_vector=with_vector)
            points += page
            if offset is None:
                return points

    def _current(self, payload: dict[str, Any], now: float) -> float:
        """Strength at `now`; a pinned memory does not cool."""
        if payload["pinned"]:
            return float(payload["strength"])
        cooling = self._cooling[Tier(payload["tier"])]
        return cooling.strength(payload["strength"], payload["updated_at"], now)

    def _expiries(self, payload: dict[str, Any]) -> dict[str, float]:
        """The forgetting instants to store with a memory: when it leaves short-term or
        long-term memory (expires_at) and, for a long-term memory, when it then leaves the
        archive (archive_expires_at). A pinned memory never does."""
        laws = (
            {EXPIRES_FIELD: self._cooling[Tier.SHORT_TERM]}
            if payload["tier"] == Tier.SHORT_TERM.value
            else {
                EXPIRES_FIELD: self._cooling[Tier.LONG_TERM],
                ARCHIVE_EXPIRES_FIELD: self._cooling[Tier.ARCHIVE],
            }
        )
        return {
            name: NEVER
            if payload["pinned"]
            else law.expires_at(payload["strength"], payload["updated_at"])
            for name, law in laws.items()
        }

    def _leaves_at(self, payload: dict[str, Any], now: float) -> float:
        """When a memory leaves the tier it is in at `now`."""
        archived = self._tier(payload, now) == Tier.ARCHIVE
        return float(payload[ARCHIVE_EXPIRES_FIELD if archived else EXPIRES_FIELD])

    def _reinforced(self, payload: dict[str, Any], amount: float, now: float) -> dict[str, Any]:
        """The fields that reinforce a memory by `amount` at `now`: its strength at `now`
        grows by `amount` (forgetting.reinforced: on a fitted curve an old memory keeps its
        age, so what it gains cools as slowly as it does)."""
        if payload["pinned"]:
            strength, origin = float(payload["strength"]) + amount, now
        else:
            law = self._cooling[Tier(payload["tier"])]
            strength, origin = reinforced(
                law, payload["strength"], payload["updated_at"], now, amount
            )
        # An archived memory comes back into long-term memory if this lifts its expiry past
        # `now` (recognised and reinforced enough).
        fields: dict[str, Any] = {"strength": exact(strength), "updated_at": exact(origin)}
        fields.update(self._expiries({**payload, **fields}))
        return fields

    def _memory(
        self, point: Point, now: float, score: float = 0.0, strength: float | None = None
    ) -> Memory:
        p = point.payload
        return Memory(
            id=point.id,
            scope=Scope(tenant=p["tenant"], user=p["user"]),
            role=Role(p["role"]),
            tier=self._tier(p, now),
            text=p["text"],
            created_at=p["created_at"],
            updated_at=p["updated_at"],
            strength=p["strength"],
            current_strength=self._current(p, now) if strength is None else strength,
            score=score,
            metadata=p.get("metadata", {}),
            pinned=p["pinned"],
            expires_at=None if p["pinned"] else self._leaves_at(p, now),
            summary=p.get("summary", ""),
            source_ids=list(p.get("source_ids", [])),
        )


def _merged(metadata: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` merged into `metadata`; a None value removes its key."""
    result = {**metadata, **changes}
    return {key: value for key, value in result.items() if value is not None}
