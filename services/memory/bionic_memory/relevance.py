"""Relevance-first recall: the slots go to what the message is about, found by meaning
and by its words.

The original selection (recall.py) spends half the slots on the strongest memories,
whatever they are about; measured on LoCoMo that injects less of the evidence than plain
top-k at the same number of memories. Here strength only breaks near-ties: a candidate
ranks by `score + strength_weight * ln(1 + strength)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from bionic_memory.recall import Candidate
from bionic_memory.store.base import Point

T = TypeVar("T")


def priority(candidate: Candidate[T], strength_weight: float) -> float:
    return candidate.score + strength_weight * math.log1p(max(candidate.strength, 0.0))


def relevance_first(
    candidates: Sequence[Candidate[T]], limit: int, strength_weight: float
) -> list[Candidate[T]]:
    """The `limit` candidates of highest priority, oldest first."""
    ranked = sorted(candidates, key=lambda c: priority(c, strength_weight), reverse=True)
    return sorted(ranked[:limit], key=lambda c: c.created_at)


def with_lexical(
    dense: Sequence[tuple[Point, float]],
    lexical: Sequence[tuple[Point, float]],
    query: Sequence[float],
    weight: float,
    limit: int,
) -> list[tuple[Point, float]]:
    """Dense and BM25 hits fused by score: cosine + weight * bm25 / (the best bm25), best
    first, `limit` at most. The result stays a similarity (cosine plus a lexical bonus of
    at most `weight`), so softmax shares and score thresholds keep their meaning; hits
    found only lexically get their cosine from their vector."""
    best = max((score for _, score in lexical), default=0.0)
    bonus = {point.id: weight * score / best for point, score in lexical} if best > 0 else {}
    cosine = {point.id: score for point, score in dense}
    points = {point.id: point for point, _ in [*dense, *lexical]}
    q = np.asarray(query, dtype=np.float64)
    q /= max(float(np.linalg.norm(q)), 1e-12)
    fused = []
    for point_id, point in points.items():
        if point_id not in cosine:
            v = np.asarray(point.vector, dtype=np.float64)
            cosine[point_id] = float(v @ q / max(float(np.linalg.norm(v)), 1e-12))
        fused.append((point, cosine[point_id] + bonus.get(point_id, 0.0)))
    fused.sort(key=lambda hit: hit[1], reverse=True)
    return fused[:limit]
