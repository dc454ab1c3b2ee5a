"""The server backend: qdrant-client against a Qdrant server (compose, Kubernetes, cluster).

One collection for all tenants with a tenant index on `tenant`; every write waits until
the server has applied it, so an acknowledged write is durable there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient, models

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


class QdrantStore:
    def __init__(self, client: QdrantClient, collection: str, dimension: int) -> None:
        self.dimension = dimension
        self._client = client
        self._collection = collection
        if not client.collection_exists(collection):
            client.create_collection(
                collection,
                vectors_config={
                    VECTOR: models.VectorParams(size=dimension, distance=models.Distance.COSINE)
                },
                sparse_vectors_config={
                    LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                # Every query filters on the tenant: graphs per tenant, none across them.
                hnsw_config=models.HnswConfigDiff(payload_m=16, m=0),
            )
            log.info("created collection %s", collection)
        self._ensure_indexes()

    @classmethod
    def connect(
        cls, url: str, collection: str, dimension: int, api_key: str | None = None
    ) -> QdrantStore:
        return cls(QdrantClient(url=url, api_key=api_key), collection, dimension)

    def _ensure_indexes(self) -> None:
        info = self._client.get_collection(self._collection)
        existing = set(info.payload_schema)
        wanted: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
            TENANT_FIELD: models.KeywordIndexParams(
                type=models.KeywordIndexType.KEYWORD, is_tenant=True
            ),
            **dict.fromkeys(INSTANT_FIELDS, models.PayloadSchemaType.FLOAT),
            **dict.fromkeys(KEYWORD_FIELDS, models.PayloadSchemaType.KEYWORD),
        }
        for name, schema in wanted.items():
            if name not in existing:
                self._client.create_payload_index(
                    self._collection, name, field_schema=schema, wait=True
                )

    def upsert(self, points: Sequence[Point]) -> None:
        if not points:
            return
        self._client.upsert(
            self._collection,
            points=[
                models.PointStruct(
                    id=p.id,
                    vector={
                        VECTOR: list(p.vector or ()),
                        LEXICAL: _sparse(document_terms(p.payload)),
                    }
                    if p.lexical
                    else {VECTOR: list(p.vector or ())},
                    payload=p.payload,
                )
                for p in points
            ],
            wait=True,
        )

    def set_payloads(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """One request for all the points (a recall reinforces up to some 30: each hit and
        its short-term copy) instead of a waited round trip to the server for each."""
        if not changes:
            return
        self._client.batch_update_points(
            self._collection,
            [
                models.SetPayloadOperation(
                    set_payload=models.SetPayload(payload=fields, points=[point_id])
                )
                for point_id, fields in changes
            ],
            wait=True,
        )

    def retrieve(self, ids: Sequence[str], with_vector: bool = False) -> list[Point]:
        if not ids:
            return []
        records = self._client.retrieve(
            self._collection, list(ids), with_payload=True, with_vectors=with_vector
        )
        return [_point(r) for r in records]

    def search(
        self, where: Where, vector: Sequence[float], limit: int, with_vector: bool = False
    ) -> list[tuple[Point, float]]:
        return self.search_many([Search(where, limit, vector, with_vector=with_vector)])[0]

    def search_text(
        self, where: Where, text: str, limit: int, with_vector: bool = False
    ) -> list[tuple[Point, float]]:
        return self.search_many([Search(where, limit, text=text, with_vector=with_vector)])[0]

    def search_many(self, searches: Sequence[Search]) -> list[list[tuple[Point, float]]]:
        """One request for all the searches (a recall makes five) instead of a round
        trip to the server for each."""
        requests = [_request(s) for s in searches]
        asked = [r for r in requests if r is not None]
        answers = iter(self._client.query_batch_points(self._collection, asked) if asked else [])
        return [
            [(_point(h), h.score) for h in next(answers).points] if r is not None else []
            for r in requests
        ]

    def scroll(
        self, where: Where, limit: int, offset: str | None, with_vector: bool = False
    ) -> tuple[list[Point], str | None]:
        records, next_offset = self._client.scroll(
            self._collection,
            scroll_filter=_filter(where),
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=with_vector,
        )
        return [_point(r) for r in records], None if next_offset is None else str(next_offset)

    def facet(self, key: str, where: Where, limit: int) -> list[tuple[str, int]]:
        response = self._client.facet(
            self._collection, key, facet_filter=_filter(where), limit=limit, exact=True
        )
        return [(str(hit.value), hit.count) for hit in response.hits]

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._client.delete(
                self._collection, points_selector=models.PointIdsList(points=list(ids)), wait=True
            )

    def delete_where(self, where: Where) -> int:
        filt = _filter(where)
        count = self._client.count(self._collection, count_filter=filt, exact=True).count
        if count:
            self._client.delete(
                self._collection, points_selector=models.FilterSelector(filter=filt), wait=True
            )
        return count

    def count(self, where: Where) -> int:
        return self._client.count(self._collection, count_filter=_filter(where), exact=True).count

    def close(self) -> None:
        self._client.close()


def _request(search: Search) -> models.QueryRequest | None:
    """The server's query for `search`; None for a text without a single term."""
    if search.text is None:
        return models.QueryRequest(
            query=list(search.vector),
            using=VECTOR,
            filter=_filter(search.where),
            limit=search.limit,
            with_payload=True,
            with_vector=search.with_vector,
        )
    terms = query_terms(search.text)
    if not terms[0]:
        return None
    return models.QueryRequest(
        query=_sparse(terms),
        using=LEXICAL,
        filter=_filter(search.where),
        limit=search.limit,
        with_payload=True,
        with_vector=[VECTOR] if search.with_vector else False,
    )


def _sparse(terms: tuple[list[int], list[float]]) -> models.SparseVector:
    return models.SparseVector(indices=terms[0], values=terms[1])


def _point(record: models.Record | models.ScoredPoint) -> Point:
    vector = record.vector
    dense = vector.get(VECTOR) if isinstance(vector, dict) else None
    return Point(
        id=str(record.id),
        payload=dict(record.payload or {}),
        vector=list(dense) if isinstance(dense, list) else None,  # type: ignore[arg-type]
    )


def _filter(where: Where) -> models.Filter:
    must: list[models.Condition] = [
        models.FieldCondition(key=key, match=models.MatchValue(value=value))
        for key, value in where.keywords()
    ]
    must += [
        models.FieldCondition(key=key, range=models.Range(**{op: value}))
        for key, op, value in where.ranges()
    ]
    must_not: list[models.Condition] = (
        [models.HasIdCondition(has_id=list(where.exclude_ids))] if where.exclude_ids else []
    )
    return models.Filter(must=must or None, must_not=must_not or None)
