"""Recall selection: which of the candidate memories a chat turn gets, as plain functions.

The original algorithm (DESIGN.md section 2):

1. search long-term memory for `limit x retrieval_multiplier` hits; each is reinforced by
   its softmax share of relevance and promoted into short-term memory;
2. take `limit x cluster_multiplier` short-term candidates, cluster them by embedding into
   `limit x retrieval_multiplier` clusters, and keep per cluster the member nearest the
   query, carrying the cluster's summed strength (cluster suppression);
3. return the union of the top ceil(limit/2) by relevance and the strongest of the rest,
   `limit` memories at most, in time order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from bionic_memory.clusters import kmeans_labels

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RecallParams:
    """The knobs of recall selection; the defaults are the original system's."""

    limit: int = 7
    retrieval_multiplier: int = 2
    cluster_multiplier: int = 3
    # Softmax temperature over cosine relevance for reinforcement shares.
    temperature: float = 1.0

    @property
    def long_term_candidates(self) -> int:
        return self.limit * self.retrieval_multiplier

    @property
    def short_term_candidates(self) -> int:
        return self.limit * self.cluster_multiplier

    @property
    def clusters(self) -> int:
        return self.limit * self.retrieval_multiplier


ORIGINAL = RecallParams()


@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    """One memory that may be recalled: `item` is the caller's own record of it."""

    item: T
    vector: npt.NDArray[np.float32]
    score: float  # cosine relevance to the query
    strength: float  # current strength
    created_at: float


def reinforcement_shares(scores: Sequence[float], temperature: float) -> list[float]:
    """Each recalled memory's share of relevance: a softmax over the recalled set."""
    if not scores:
        return []
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def suppress(candidates: Sequence[Candidate[T]], n_clusters: int) -> list[Candidate[T]]:
    """One representative per embedding cluster: the member nearest the query, carrying
    the cluster's summed strength. Best relevance first."""
    if len(candidates) <= 1:
        return list(candidates)
    labels = kmeans_labels(np.stack([c.vector for c in candidates]), n_clusters)
    best: dict[int, Candidate[T]] = {}
    strength: dict[int, float] = {}
    for label, candidate in zip(labels.tolist(), candidates, strict=True):
        strength[label] = strength.get(label, 0.0) + candidate.strength
        if label not in best or candidate.score > best[label].score:
            best[label] = candidate
    kept = [replace(best[label], strength=strength[label]) for label in best]
    return sorted(kept, key=lambda c: c.score, reverse=True)


def select(candidates: Sequence[Candidate[T]], limit: int) -> list[Candidate[T]]:
    """The union of the top ceil(limit/2) by relevance and the strongest of the rest,
    at most `limit`, oldest first."""
    by_relevance = sorted(candidates, key=lambda c: c.score, reverse=True)
    chosen = by_relevance[: math.ceil(limit / 2)]
    rest = sorted(by_relevance[len(chosen) :], key=lambda c: c.strength, reverse=True)
    chosen += rest[: limit - len(chosen)]
    return sorted(chosen, key=lambda c: c.created_at)


def recall_selection(
    candidates: Sequence[Candidate[T]], params: RecallParams
) -> list[Candidate[T]]:
    """Cluster suppression, then the relevance/strength union, in time order."""
    best = sorted(candidates, key=lambda c: c.score, reverse=True)[: params.short_term_candidates]
    return select(suppress(best, params.clusters), params.limit)
