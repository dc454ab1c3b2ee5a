"""The embedded backend: the Qdrant engine in-process (qdrant-edge-py) on a local folder."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import qdrant_edge as qe

from bionic_memory.lexical import LEXICAL, document_terms, query_terms
from bionic_memory.store.base import (
    INSTANT_FIELDS,
    KEYWORD_FIELDS,
    TENANT_FIELD,
    Point,
    Search,
    Where,
)

log = logging.getLogger(__name__)

VECTOR = "dense"
# A delete holds the shard (every read and write waits until it is done) and, in
# qdrant-edge-py 0.9, mostly the GIL too (every thread of the service waits). delete_where
# therefore deletes at most this many points per engine call, so Recall and Remember
# interleave with a long Prune: a chunk took about 5 ms at 200k memories, and chunks of
# 100 to 1000 cost the same in total (about 1.3x one delete of everything).
DELETE_CHUNK = 250
# The ids to delete are found a page at a time (a scroll of ids only, about 3 us each).
DELETE_PAGE = 10_000
# Threads of the engine's search pool, which reads a shard's segments in parallel. Its own
# default (8 on a 2-core machine) cost CPU and time on every query, for a search filtered to
# one user's memories. One thread against eight (bench/edge_search_threads.py, in-process):
# Recall p50 4.1 -> 2.8 ms and CPU per Recall 5.4-5.5 -> 2.9-3.1 ms at 200k memories, p50
# 5.1 -> 4.3 ms and CPU 6.1-6.7 -> 3.7-5.2 ms at 1M. The running service spent 1.5-2.2 ms
# less CPU per recalled turn at c=1 and served as many turns/s at c=32.
SEARCH_THREADS = 1


class EdgeStore:
    """One edge shard for all tenants; every query filters on the tenant index."""

    def __init__(
        self,
        path: str,
        dimension: int,
        delete_chunk: int = DELETE_CHUNK,
        delete_page: int = DELETE_PAGE,
        search_threads: int = SEARCH_THREADS,
    ) -> None:
        self.dimension = dimension
        self._delete_chunk = delete_chunk
        self._delete_page = max(delete_page, delete_chunk)
        shard_dir = os.path.join(path, "shard")
        config = qe.EdgeConfig(
            vectors={VECTOR: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
            # Payload in RAM (read once when the shard opens) instead of the engine's cold
            # default, which reads each payload from disk on demand and drops it from the
            # page cache on flush. Deleting a point reads its payload (to unindex it), so a
            # Prune was one random 4 KiB read from disk per forgotten memory (100k at 1M:
            # 8.2 s, 5.7 s of CPU; 20k at 200k: 1.30 s, 0.77 s of CPU, and 0.32 s with the
            # payload in RAM). Costs the payload's size in resident memory (on tmpfs also its
            # file's preallocated pages: 32 MiB more for an empty store). Applies to the
            # segments the engine creates from now on: an older shard keeps its cold ones
            # (EdgeShard.optimize() would convert them, but builds HNSW graphs: 8.9 s at 20k).
            payload_memory=qe.Memory.Cached,
            # Given each time: a loaded shard would otherwise keep the count it last had.
            max_search_threads=search_threads or len(os.sched_getaffinity(0)),
        )
        if os.path.isdir(shard_dir) and os.listdir(shard_dir):
            self._shard = qe.EdgeShard.load(shard_dir, config)
            log.info(
                "opened edge store at %s (%d points)", shard_dir, self._shard.info().points_count
            )
        else:
            os.makedirs(shard_dir, exist_ok=True)
            self._shard = qe.EdgeShard.create(shard_dir, config)
            log.info("created edge store at %s", shard_dir)
        # Idempotent: also adds the lexical vector to a shard made before it existed (its
        # old points become lexically searchable when they are next written).
        self._shard.update(qe.UpdateOperation.create_sparse_vector(LEXICAL, qe.Modifier.Idf))
        self._ensure_indexes()

    def _ensure_indexes(self) -> None:
        existing = set(self._shard.info().payload_schema)
        wanted: dict[str, Any] = {
            TENANT_FIELD: qe.KeywordIndexParams(is_tenant=True),
            **dict.fromkeys(INSTANT_FIELDS, qe.PayloadSchemaType.Float),
            **dict.fromkeys(KEYWORD_FIELDS, qe.PayloadSchemaType.Keyword),
        }
        for name, schema in wanted.items():
            if name not in existing:
                self._shard.update(qe.UpdateOperation.create_field_index(name, schema))

    def upsert(self, points: Sequence[Point]) -> None:
        if not points:
            return
        self._shard.update(
            qe.UpdateOperation.upsert_points(
                [
                    qe.Point(
                        p.id,
                        {
                            VECTOR: list(p.vector or ()),
                            LEXICAL: qe.SparseVector(*document_terms(p.payload)),
                        }
                        if p.lexical
                        else {VECTOR: list(p.vector or ())},
                        p.payload,
                    )
                    for p in points
                ]
            )
        )

    def set_payloads(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        # The engine takes one operation per call, and a per-point set_payload is its
        # cheapest: one upsert_points of the same 28 whole points (UpdateOnly) took 5.0-5.9
        # ms against 1.4-1.6 ms for the 28 calls.
        for point_id, fields in changes:
            self._shard.update(qe.UpdateOperation.set_payload([point_id], fields))

    def retrieve(self, ids: Sequence[str], with_vector: bool = False) -> list[Point]:
        if not ids:
            return []
        records = self._shard.retrieve(list(ids), with_payload=True, with_vector=with_vector)
        return [_point(r) for r in records]

    def search(
        self, where: Where, vector: Sequence[float], limit: int, with_vector: bool = False
    ) -> list[tuple[Point, float]]:
        return self._query(Search(where, limit, vector, with_vector=with_vector))

    def search_text(
        self, where: Where, text: str, limit: int, with_vector: bool = False
    ) -> list[tuple[Point, float]]:
        return self._query(Search(where, limit, text=text, with_vector=with_vector))

    def search_many(self, searches: Sequence[Search]) -> list[list[tuple[Point, float]]]:
        # One query each: in-process there is no round trip to save, and the engine's
        # query_batch measured no cheaper (a recall's 5 queries: 1.5-1.8 ms either way).
        return [self._query(search) for search in searches]

    def _query(self, search: Search) -> list[tuple[Point, float]]:
        request = _request(search)
        if request is None:
            return []
        return [(_point(h), h.score) for h in self._shard.query(request)]

    def scroll(
        self, where: Where, limit: int, offset: str | None, with_vector: bool = False
    ) -> tuple[list[Point], str | None]:
        records, next_offset = self._shard.scroll(
            qe.ScrollRequest(
                offset=offset,
                limit=limit,
                filter=_filter(where),
                with_payload=True,
                with_vector=with_vector,
            )
        )
        return [_point(r) for r in records], None if next_offset is None else str(next_offset)

    def facet(self, key: str, where: Where, limit: int) -> list[tuple[str, int]]:
        response = self._shard.facet(
            qe.FacetRequest(key, limit=limit, exact=True, filter=_filter(where))
        )
        return [(str(hit.value), hit.count) for hit in response.hits]

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._shard.update(qe.UpdateOperation.delete_points(list(ids)))

    def delete_where(self, where: Where) -> int:
        """Delete in chunks of at most `delete_chunk` points, one engine call each, so the
        shard is free between them. Each chunk is deleted by `where` *and* its ids: a
        point changed since its page was read (reinforced, pinned) is re-checked, not
        deleted on stale information."""
        filt = _filter(where)
        deleted = 0
        offset: qe.PointId | None = None
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(
                    offset=offset,
                    limit=self._delete_page,
                    filter=filt,
                    with_payload=False,
                    with_vector=False,
                )
            )
            ids = [r.id for r in records]
            for start in range(0, len(ids), self._delete_chunk):
                chunk = _filter(where, only_ids=ids[start : start + self._delete_chunk])
                count = self._shard.count(qe.CountRequest(filter=chunk))
                if count:
                    self._shard.update(qe.UpdateOperation.delete_points_by_filter(chunk))
                deleted += count
            if offset is None:
                return deleted

    def count(self, where: Where) -> int:
        return self._shard.count(qe.CountRequest(filter=_filter(where)))

    def close(self) -> None:
        self._shard.flush()
        self._shard.close()


def _request(search: Search) -> qe.QueryRequest | None:
    """The engine's query for `search`; None for a text without a single term."""
    if search.text is None:
        query = qe.Query.Nearest(list(search.vector), using=VECTOR)
        with_vector: bool | list[str] = search.with_vector
    else:
        terms = qe.SparseVector(*query_terms(search.text))
        if not terms.indices:
            return None
        query = qe.Query.Nearest(terms, using=LEXICAL)
        with_vector = [VECTOR] if search.with_vector else False
    return qe.QueryRequest(
        limit=search.limit,
        query=query,
        filter=_filter(search.where),
        with_payload=True,
        with_vector=with_vector,
    )


def _point(record: qe.Record | qe.ScoredPoint) -> Point:
    vector = record.vector
    dense = vector.get(VECTOR) if isinstance(vector, dict) else None
    return Point(id=str(record.id), payload=dict(record.payload or {}), vector=dense)  # type: ignore[arg-type]


def _filter(where: Where, only_ids: Sequence[qe.PointId] = ()) -> qe.Filter:
    must: list[Any] = [
        qe.FieldCondition(key, match=qe.MatchValue(value)) for key, value in where.keywords()
    ]
    must += [
        qe.FieldCondition(key, range=qe.RangeFloat(**{op: value}))
        for key, op, value in where.ranges()
    ]
    if only_ids:
        must.append(qe.HasIdCondition(set(only_ids)))
    must_not: list[Any] = [qe.HasIdCondition(set(where.exclude_ids))] if where.exclude_ids else []
    return qe.Filter(must=must or None, must_not=must_not or None)
