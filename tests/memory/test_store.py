"""The storage interface, run against every backend (the congruence suite, part 1)."""

from __future__ import annotations

import uuid

import numpy as np

from bionic_memory.store.base import MemoryStore, Point, Where
from tests.memory.conftest import DIM


def pid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def unit(i: int) -> list[float]:
    v = np.zeros(DIM)
    v[i % DIM] = 1.0
    v[(i + 3) % DIM] = 0.2 * (i // DIM)
    return (v / np.linalg.norm(v)).tolist()


def seed(store: MemoryStore) -> None:
    points = [
        Point(
            pid(i),
            {
                "tenant": f"t{i % 2}",
                "user": f"u{i % 3}",
                "tier": "ltm" if i % 4 else "stm",
                "role": "user",
                "content_hash": f"h{i}",
                "expires_at": float(i * 10),
                "archive_expires_at": float(i * 100),
                "n": i,
            },
            unit(i),
        )
        for i in range(24)
    ]
    store.upsert(points)


def test_retrieve_returns_what_was_upserted_with_vectors(store: MemoryStore) -> None:
    seed(store)
    found = {p.id: p for p in store.retrieve([pid(3), pid(5), pid(999)], with_vector=True)}
    assert set(found) == {pid(3), pid(5)}
    assert found[pid(3)].payload["n"] == 3
    assert np.allclose(found[pid(3)].vector or [], unit(3), atol=1e-6)
    assert store.retrieve([pid(3)])[0].vector is None


def test_search_filters_on_every_field_and_ranks_by_cosine(store: MemoryStore) -> None:
    seed(store)
    where = Where(tenant="t1", user="u0", tier="ltm", alive_at=50.0)
    hits = store.search(where, unit(9), limit=5)
    expected = [i for i in range(24) if i % 2 == 1 and i % 3 == 0 and i % 4 and i * 10 >= 50]
    assert {p.payload["n"] for p, _ in hits} == set(expected)
    assert hits[0][0].id == pid(9) and abs(hits[0][1] - 1.0) < 1e-5
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    excluded = store.search(Where(tenant="t1", exclude_ids=(pid(9),)), unit(9), limit=24)
    assert pid(9) not in {p.id for p, _ in excluded} and len(excluded) == 11
    assert store.search(Where(content_hash="h4", tenant="t0"), unit(0), 5)[0][0].id == pid(4)


def test_scroll_pages_through_everything_once(store: MemoryStore) -> None:
    seed(store)
    seen: list[str] = []
    offset = None
    while True:
        page, offset = store.scroll(Where(tenant="t0"), 5, offset, with_vector=True)
        assert all(p.vector is not None for p in page)
        seen += [p.id for p in page]
        if offset is None:
            break
    assert sorted(seen) == sorted(pid(i) for i in range(0, 24, 2))


def test_set_payloads_changes_only_the_given_fields(store: MemoryStore) -> None:
    seed(store)
    store.set_payloads(
        [
            (pid(7), {"n": 70, "expires_at": 1.0, "metadata": {"a": [1, 2]}}),
            (pid(9), {"tier": "stm"}),
            (pid(7), {"n": 71}),  # in order: the later change of a point wins
        ]
    )
    found = {p.id: p for p in store.retrieve([pid(7), pid(9)], with_vector=True)}
    seven, nine = found[pid(7)], found[pid(9)]
    assert seven.payload["n"] == 71 and seven.payload["tenant"] == "t1"
    assert seven.payload["metadata"] == {"a": [1, 2]}
    assert np.allclose(seven.vector or [], unit(7), atol=1e-6)
    assert store.count(Where(expires_before=2.0)) == 2  # points 0 and 7
    assert nine.payload["tier"] == "stm" and nine.payload["n"] == 9
    store.set_payloads([])  # nothing to write: no request, and no error


def test_both_forgetting_instants_filter(store: MemoryStore) -> None:
    seed(store)
    archive = Where(tier="ltm", expires_before=100.0, archive_alive_at=500.0)  # 5, 6, 7, 9
    assert {p.payload["n"] for p, _ in store.search(archive, unit(5), 24)} == {5, 6, 7, 9}
    assert store.count(Where(archive_expires_before=300.0)) == 3  # 0, 1, 2
    assert store.delete_where(Where(tier="ltm", archive_expires_before=500.0)) == 3  # 1, 2, 3


def test_facet_counts_distinct_values(store: MemoryStore) -> None:
    seed(store)
    assert sorted(store.facet("tenant", Where(), 100)) == [("t0", 12), ("t1", 12)]
    assert sorted(store.facet("user", Where(tenant="t0"), 100)) == [
        ("u0", 4),
        ("u1", 4),
        ("u2", 4),
    ]


def test_delete_where_removes_exactly_the_matching_points(store: MemoryStore) -> None:
    seed(store)
    assert store.delete_where(Where(tier="ltm", expires_before=100.0)) == 7  # 1..9, not 4, 8
    left = {p.payload["n"] for p in store.retrieve([pid(i) for i in range(24)])}
    assert left == {0, 4, 8} | set(range(10, 24))
    assert store.delete_where(Where(tier="ltm", expires_before=100.0)) == 0
    store.delete([pid(0), pid(4)])
    assert store.count(Where()) == 15
