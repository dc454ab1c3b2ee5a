"""Lexical (BM25) search on every backend, and its fusion with cosine."""

from __future__ import annotations

import numpy as np
import pytest

from bionic_memory.relevance import with_lexical
from bionic_memory.store.base import MemoryStore, Point, Search, Where
from tests.memory.conftest import DIM


def point(i: int, text: str, tenant: str = "t") -> Point:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    payload = {"tenant": tenant, "user": "u", "tier": "ltm", "text": text, "expires_at": 1e18}
    return Point(id=f"00000000-0000-0000-0000-{i:012d}", payload=payload, vector=v.tolist())


def test_search_text_finds_rare_words_within_the_filter(store: MemoryStore) -> None:
    store.upsert(
        [
            point(1, "We adopted a puppy named Oscar last spring"),
            point(2, "The weather was lovely, we walked a lot"),
            point(3, "Oscar loves the beach and chasing seagulls"),
            point(4, "Oscar is my neighbour's cat", tenant="other"),
        ]
    )
    hits = store.search_text(Where(tenant="t", user="u"), "Where does Oscar like to go?", 5)
    assert {p.payload["text"] for p, _ in hits} == {
        "We adopted a puppy named Oscar last spring",
        "Oscar loves the beach and chasing seagulls",
    }
    assert all(score > 0 for _, score in hits)
    assert store.search_text(Where(tenant="t"), "the a of", 5) == []  # stop words only


def test_search_many_answers_each_search_as_alone_in_order(store: MemoryStore) -> None:
    store.upsert([point(i, f"Oscar note {i}" if i % 2 else f"tea note {i}") for i in range(8)])
    near = [1.0] + [0.0] * (DIM - 1)
    searches = [
        Search(Where(tenant="t"), 3, text="Oscar", with_vector=True),
        Search(Where(tenant="t"), 5, near),
        Search(Where(tenant="t"), 5, text="the a of"),  # stop words only: nothing to ask
        Search(Where(tenant="t", user="nobody"), 5, near, with_vector=True),
        Search(Where(tenant="t"), 2, text="tea"),
    ]
    alone = [
        store.search_text(Where(tenant="t"), "Oscar", 3, with_vector=True),
        store.search(Where(tenant="t"), near, 5),
        [],
        [],
        store.search_text(Where(tenant="t"), "tea", 2),
    ]
    found = store.search_many(searches)
    assert [[(p.id, p.vector, round(s, 5)) for p, s in hits] for hits in found] == [
        [(p.id, p.vector, round(s, 5)) for p, s in hits] for hits in alone
    ]
    assert [len(hits) for hits in found] == [3, 5, 0, 0, 2]
    assert all(p.vector is not None for p, _ in found[0])
    assert store.search_many([]) == []


def test_rewriting_a_text_rewrites_its_terms(store: MemoryStore) -> None:
    store.upsert([point(1, "jasmine tea in the morning")])
    store.upsert([point(1, "espresso in the morning")])
    where = Where(tenant="t")
    assert store.search_text(where, "jasmine", 5) == []
    assert len(store.search_text(where, "espresso", 5)) == 1


def test_a_point_stored_without_its_terms_is_not_found_lexically(store: MemoryStore) -> None:
    copy = point(2, "Oscar again")
    copy.lexical = False
    store.upsert([point(1, "Oscar at the beach"), copy])
    hits = store.search_text(Where(tenant="t"), "Oscar", 5)
    assert [p.payload["text"] for p, _ in hits] == ["Oscar at the beach"]
    assert len(store.search(Where(tenant="t"), copy.vector or [], 5)) == 2


def test_fusion_adds_a_bonus_of_at_most_weight_to_the_cosine() -> None:
    a, b, c = point(0, "a"), point(1, "b"), point(2, "c")
    query = [1.0] + [0.0] * (DIM - 1)
    fused = with_lexical(
        dense=[(a, 0.9), (b, 0.5)], lexical=[(c, 4.0), (b, 2.0)], query=query, weight=0.5, limit=3
    )
    scores = {p.id: s for p, s in fused}
    assert scores[a.id] == pytest.approx(0.9)  # no lexical match
    assert scores[b.id] == pytest.approx(0.5 + 0.5 * 2.0 / 4.0)
    assert scores[c.id] == pytest.approx(0.0 + 0.5)  # lexical only: cosine from its vector
    assert [p.id for p, _ in fused] == [a.id, b.id, c.id]
    assert len(with_lexical([(a, 0.9)], [(c, 4.0)], query, 0.5, limit=1)) == 1
