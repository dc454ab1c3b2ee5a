"""Recall selection and clustering as plain functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bionic_memory.clusters import kmeans_labels, near_duplicate_groups
from bionic_memory.recall import (
    ORIGINAL,
    Candidate,
    RecallParams,
    recall_selection,
    reinforcement_shares,
    select,
    suppress,
)


def candidate(name: str, direction: int, score: float, strength: float, t: float) -> Candidate[str]:
    v = np.zeros(8, dtype=np.float32)
    v[direction] = 1.0
    v[(direction + 1) % 8] = 0.01 * len(name)
    return Candidate(item=name, vector=v, score=score, strength=strength, created_at=t)


def test_the_original_preset_is_the_original_systems() -> None:
    assert (ORIGINAL.limit, ORIGINAL.long_term_candidates, ORIGINAL.short_term_candidates) == (
        7,
        14,
        21,
    )
    assert ORIGINAL.clusters == 14


@given(st.lists(st.floats(-1, 1), min_size=1, max_size=30), st.floats(0.05, 5))
def test_reinforcement_shares_are_a_softmax(scores: list[float], temperature: float) -> None:
    shares = reinforcement_shares(scores, temperature)
    assert math.isclose(sum(shares), 1.0)
    expected = [math.exp(s / temperature) for s in scores]
    assert shares == pytest.approx([e / sum(expected) for e in expected])


def test_suppression_keeps_the_member_nearest_the_query_with_the_clusters_strength() -> None:
    members = [
        candidate("tea", 0, 0.9, 0.5, 1.0),
        candidate("tea!", 0, 0.8, 2.0, 2.0),
        candidate("tea!!", 0, 0.7, 1.0, 3.0),
        candidate("cats", 4, 0.3, 0.4, 4.0),
    ]
    kept = suppress(members, n_clusters=2)
    assert [(c.item, c.strength) for c in kept] == [("tea", 3.5), ("cats", 0.4)]


def test_selection_is_the_union_of_relevance_and_strength_in_time_order() -> None:
    pool = [
        candidate("a", 0, 0.9, 0.1, 5.0),
        candidate("b", 1, 0.8, 0.1, 1.0),
        candidate("c", 2, 0.7, 0.2, 3.0),
        candidate("d", 3, 0.2, 9.0, 2.0),
        candidate("e", 4, 0.1, 5.0, 4.0),
    ]
    # top 2 by relevance (a, b), then the strongest of the rest (d), oldest first
    assert [c.item for c in select(pool, 3)] == ["b", "d", "a"]


def test_recall_selection_returns_at_most_the_limit() -> None:
    pool = [candidate(f"m{i}", i % 8, 1 - i / 40, 1.0, float(i)) for i in range(30)]
    chosen = recall_selection(pool, RecallParams(limit=7))
    assert len(chosen) == 7
    assert [c.created_at for c in chosen] == sorted(c.created_at for c in chosen)


def test_kmeans_is_deterministic_and_separates_clear_clusters() -> None:
    rng = np.random.default_rng(1)
    centres = np.eye(16)[:3]
    rows = np.concatenate([c + 0.05 * rng.standard_normal((10, 16)) for c in centres])
    labels = kmeans_labels(rows, 3)
    assert np.array_equal(labels, kmeans_labels(rows, 3))
    assert [len(set(labels[i * 10 : (i + 1) * 10])) for i in range(3)] == [1, 1, 1]
    assert len(set(labels)) == 3
    assert kmeans_labels(rows[:2], 5).tolist() == [0, 1]


def test_near_duplicate_groups_are_led_by_the_first_in_order() -> None:
    rows = np.array([[1, 0, 0], [0.99, 0.05, 0], [0, 1, 0], [0, 0.999, 0.02]])
    assert near_duplicate_groups(rows, [1, 0, 2, 3], 0.95) == [[1, 0], [2, 3]]
    assert near_duplicate_groups(rows, [0, 1, 2, 3], 0.9999) == []
