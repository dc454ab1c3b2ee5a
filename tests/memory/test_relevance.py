"""Relevance-first selection as a plain function."""

from __future__ import annotations

import math

import numpy as np

from bionic_memory.recall import Candidate
from bionic_memory.relevance import priority, relevance_first


def candidate(name: str, score: float, strength: float, t: float) -> Candidate[str]:
    return Candidate(
        item=name, vector=np.ones(4, dtype=np.float32), score=score, strength=strength, created_at=t
    )


def test_the_slots_go_to_the_most_relevant_however_strong_the_rest() -> None:
    pool = [
        candidate("weak but relevant", 0.9, 0.2, 3.0),
        candidate("strong, off topic", 0.1, 50.0, 1.0),
        candidate("relevant", 0.8, 1.0, 2.0),
    ]
    chosen = relevance_first(pool, 2, strength_weight=0.0)
    assert [c.item for c in chosen] == ["relevant", "weak but relevant"]  # oldest first


def test_strength_breaks_near_ties_by_its_log() -> None:
    a = candidate("a", 0.50, 1.0, 1.0)
    b = candidate("b", 0.49, 5.0, 2.0)
    assert priority(b, 0.02) == 0.49 + 0.02 * math.log(6.0)
    assert [c.item for c in relevance_first([a, b], 1, 0.02)] == ["b"]
    assert [c.item for c in relevance_first([a, b], 1, 0.0)] == ["a"]


def test_fewer_candidates_than_slots_returns_them_all() -> None:
    pool = [candidate("x", 0.3, 1.0, 2.0), candidate("y", 0.2, 1.0, 1.0)]
    assert [c.item for c in relevance_first(pool, 5, 0.1)] == ["y", "x"]
