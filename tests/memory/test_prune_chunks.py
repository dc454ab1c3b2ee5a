"""The edge store deletes in bounded chunks: Prune forgets exactly the expired set, never
deletes a memory changed since it was found, and lets a Recall through while it runs."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from bionic_common.memory_types import Exported, Memory, Role, Scope, Tier
from bionic_memory.config import MemorySettings
from bionic_memory.decay import DAY
from bionic_memory.service import MemoryService
from bionic_memory.store.base import Point, Where
from bionic_memory.store.edge import EdgeStore
from tests.memory.conftest import DIM
from tests.memory.test_store import pid, unit

NOW = 1_700_000_000.0
WAIT = 60.0  # seconds: only a bound on a hang, never a measurement


class ShardSpy:
    """Stands in for the store's engine shard: passes every call through, records how
    many points each update removed (`deletes`: one entry per update that removed any),
    and runs `after_delete` / `after_scroll` in the calling thread."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.deletes: list[int] = []
        self.after_delete: Any = None
        self.after_scroll: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)

    def scroll(self, request: Any) -> Any:
        records, offset = self._shard.scroll(request)
        if self.after_scroll:
            self.after_scroll([r.id for r in records])
        return records, offset

    def update(self, operation: Any) -> None:
        before = self._shard.info().points_count
        self._shard.update(operation)
        removed = before - self._shard.info().points_count
        if removed > 0:
            self.deletes.append(removed)
            if self.after_delete:
                self.after_delete(len(self.deletes))


def spied(store: EdgeStore) -> ShardSpy:
    spy = ShardSpy(store._shard)
    store._shard = spy  # type: ignore[assignment]
    return spy


def points(n: int) -> list[Point]:
    return [
        Point(
            pid(i),
            {
                "tenant": "t",
                "user": f"u{i % 3}",
                "tier": "ltm" if i % 5 else "stm",
                "role": "user",
                "content_hash": f"h{i}",
                "expires_at": float((i * 37) % n),
                "archive_expires_at": 1e12,
                "n": i,
            },
            unit(i),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(("chunk", "page"), [(1, 1), (3, 7), (10, 10), (1000, 10_000)])
def test_delete_where_in_chunks_removes_exactly_the_matching_points(
    tmp_path: Path, chunk: int, page: int
) -> None:
    store = EdgeStore(str(tmp_path), DIM, delete_chunk=chunk, delete_page=page)
    try:
        store.upsert(points(60))
        spy = spied(store)
        where = Where(tier="ltm", expires_before=30.0)
        expected = {
            p.payload["n"]
            for p in points(60)
            if p.payload["tier"] == "ltm" and p.payload["expires_at"] < 30.0
        }
        assert store.delete_where(where) == len(expected)
        left = {p.payload["n"] for p in store.retrieve([pid(i) for i in range(60)])}
        assert left == set(range(60)) - expected
        assert max(spy.deletes) <= chunk  # no engine call deleted more than a chunk
        assert len(spy.deletes) >= -(-len(expected) // chunk)
        assert store.delete_where(where) == 0
    finally:
        store.close()


def test_a_point_changed_after_its_page_was_read_is_rechecked_not_deleted(
    tmp_path: Path,
) -> None:
    store = EdgeStore(str(tmp_path), DIM, delete_chunk=4, delete_page=8)
    try:
        store.upsert(points(40))
        spy = spied(store)
        where = Where(tier="ltm", expires_before=20.0)
        found: list[str] = []

        def pin_one(ids: list[str]) -> None:
            if ids and not found:  # the first page: "pin" one of it before it is deleted
                found.append(str(ids[-1]))
                store.set_payloads([(str(ids[-1]), {"expires_at": 1e12})])

        spy.after_scroll = pin_one
        expected = {
            p.id
            for p in points(40)
            if p.payload["tier"] == "ltm" and p.payload["expires_at"] < 20.0
        }
        assert store.delete_where(where) == len(expected) - 1
        left = {p.id for p in store.retrieve([pid(i) for i in range(40)])}
        assert left == {pid(i) for i in range(40)} - expected | set(found)
    finally:
        store.close()


def memory(scope: Scope, i: int, at: float) -> Exported:
    m = Memory(
        id="",
        scope=scope,
        role=Role.USER,
        tier=Tier.LONG_TERM,
        text=f"memory number {i}",
        created_at=at,
        updated_at=at,
        strength=1.0,
    )
    return Exported(m, unit(i))


def test_a_recall_issued_during_a_long_prune_completes_before_the_prune_ends(
    tmp_path: Path,
) -> None:
    """The Recall starts once Prune has deleted its first chunk; Prune waits for it before
    its next engine call. With one delete for everything (or a lock held across chunks)
    the Recall would find nothing left to prune (or never finish)."""
    store = EdgeStore(str(tmp_path), DIM, delete_chunk=10, delete_page=50)
    settings = MemorySettings(preset="original", dimension=DIM, recall_limit=3)
    service = MemoryService(store, settings, clock=lambda: NOW)
    scope = Scope("t", "reader")
    old, fresh = NOW - 60 * DAY, NOW - DAY
    service.import_batch(Scope("t", "old"), [memory(Scope("t", "old"), i, old) for i in range(95)])
    service.import_batch(scope, [memory(scope, 100 + i, fresh) for i in range(5)])
    spy = spied(store)
    recall_done = threading.Event()
    seen: dict[str, Any] = {}

    def recall() -> None:
        seen["recalled"] = service.recall(scope, "what about number 101", unit(101), now=NOW)
        seen["left_to_prune"] = store.count(Where(tier="ltm", expires_before=NOW))
        recall_done.set()

    def during_prune(deletes: int) -> None:
        if deletes == 1 and threading.current_thread().name == "prune":
            threading.Thread(target=recall, name="recall", daemon=True).start()
            seen["waited"] = recall_done.wait(WAIT)

    spy.after_delete = during_prune
    result: dict[str, Any] = {}
    prune = threading.Thread(
        target=lambda: result.update(pruned=service.prune(now=NOW, tier=Tier.LONG_TERM)),
        name="prune",
        daemon=True,
    )
    prune.start()
    prune.join(WAIT)
    assert not prune.is_alive()
    assert seen["waited"], "the Recall did not finish while Prune was between chunks"
    assert seen["recalled"].memories  # a real Recall, served from the fresh memories
    assert 0 < seen["left_to_prune"] < 95  # it ran while Prune was under way
    assert result["pruned"].forgotten_long_term == 95
    assert len(spy.deletes) >= 10 and max(spy.deletes) <= 10
    assert store.count(Where(tier="ltm", expires_before=NOW)) == 0
    assert len(service.list_page(scope, 100, "", Tier.LONG_TERM)[0]) == 6  # 5 + the message
    store.close()


def test_a_reopened_store_keeps_its_payload_in_memory(tmp_path: Path) -> None:
    """The shard is created with its payload in RAM (see EdgeStore): what reopening it
    with the store's config keeps."""
    store = EdgeStore(str(tmp_path), DIM)
    store.upsert(points(3))
    store.close()
    store = EdgeStore(str(tmp_path), DIM)
    try:
        assert store.count(Where()) == 3
        segment_configs = list((tmp_path / "shard" / "segments").glob("*/segment.json"))
        assert segment_configs
        for config in segment_configs:
            payload = json.loads(config.read_text())["config"]["payload_storage_type"]
            assert payload["type"] == "in_ram_mmap"
    finally:
        store.close()
