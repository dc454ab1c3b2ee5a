"""Memory logic on the real embedded Qdrant engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bionic_common.memory_types import Role, Scope, Tier
from bionic_memory.config import MemorySettings
from bionic_memory.decay import DAY, LONG_TERM
from bionic_memory.service import InvalidArgument, MemoryService
from bionic_memory.store.edge import EdgeStore

DIM = 8
ALICE = Scope("tenant-a", "alice")
BOB = Scope("tenant-a", "bob")
MALLORY = Scope("tenant-b", "alice")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def vec(i: int) -> list[float]:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = 0.1
    return v.tolist()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    s = EdgeStore(str(tmp_path), DIM)
    yield s
    s.close()


@pytest.fixture
def service(store: EdgeStore, clock: Clock) -> MemoryService:
    return MemoryService(store, MemorySettings(dimension=DIM, recall_limit=3), clock=clock)


def test_recall_stores_the_message_and_returns_related_memories_oldest_first(
    service: MemoryService, clock: Clock
) -> None:
    for i, text in enumerate(["tea", "coffee", "cats", "dogs"]):
        service.recall(ALICE, text, vec(i))
        clock.now += 60
    result = service.recall(ALICE, "what about tea?", vec(0))
    assert result.stored is not None and result.stored.text == "what about tea?"
    assert result.stored.role == Role.USER and result.stored.tier == Tier.LONG_TERM
    texts = [m.text for m in result.memories]
    assert "tea" in texts and "what about tea?" not in texts
    assert len(texts) == 3
    assert [m.created_at for m in result.memories] == sorted(m.created_at for m in result.memories)


def test_same_content_reinforces_instead_of_duplicating(
    service: MemoryService, store: EdgeStore, clock: Clock
) -> None:
    first = service.recall(ALICE, "I love jasmine tea", vec(0)).stored
    clock.now += 2 * DAY
    again = service.recall(ALICE, "I love jasmine tea", vec(0)).stored
    assert first is not None and again is not None
    assert again.id == first.id
    assert again.created_at == first.created_at and again.updated_at == clock.now
    assert again.strength == pytest.approx(LONG_TERM.strength(1.0, first.updated_at, clock.now) + 1)
    memories, _ = service.list_page(ALICE, 10, "", None)
    assert len(memories) == 1


def test_an_idempotency_key_applies_a_write_once(service: MemoryService, clock: Clock) -> None:
    memory, created = service.remember(ALICE, Role.ASSISTANT, "Hello!", vec(1), {}, "req-1")
    clock.now += 60
    again, created_again = service.remember(ALICE, Role.ASSISTANT, "Hello!", vec(1), {}, "req-1")
    assert created and not created_again
    assert again.strength == memory.strength and again.updated_at == memory.updated_at
    third, _ = service.remember(ALICE, Role.ASSISTANT, "Hello!", vec(1), {}, "req-2")
    assert third.strength > again.current_strength


def test_scopes_never_see_each_other(service: MemoryService) -> None:
    service.recall(ALICE, "alice's secret", vec(0))
    service.recall(MALLORY, "mallory's note", vec(0))
    assert [m.text for m in service.recall(BOB, "secret?", vec(0)).memories] == []
    assert [m.text for m in service.recall(MALLORY, "secret?", vec(0)).memories] == [
        "mallory's note"
    ]
    assert [m.text for m in service.list_page(BOB, 10, "", None)[0]] == ["secret?"]


def test_list_pages_with_a_cursor_that_only_its_owner_can_use(service: MemoryService) -> None:
    for i in range(7):
        service.remember(ALICE, Role.USER, f"fact {i}", vec(i))
    seen: list[str] = []
    token = ""
    while True:
        page, token = service.list_page(ALICE, 3, token, None)
        assert len(page) <= 3
        seen.extend(m.text for m in page)
        if not token:
            break
        with pytest.raises(InvalidArgument):
            service.list_page(BOB, 3, token, None)
    assert sorted(seen) == [f"fact {i}" for i in range(7)]


def test_a_dry_run_recalls_without_storing(service: MemoryService) -> None:
    service.recall(ALICE, "tea", vec(0))
    preview = service.recall(ALICE, "tea?", vec(0), dry_run=True)
    assert preview.stored is None and [m.text for m in preview.memories] == ["tea"]
    assert len(service.list_page(ALICE, 10, "", None)[0]) == 1


@pytest.mark.parametrize(
    ("scope", "text", "vector", "message"),
    [
        (Scope("", "u"), "x", vec(0), "scope"),
        (ALICE, "   ", vec(0), "empty"),
        (ALICE, "x" * 100_001, vec(0), "characters"),
        (ALICE, "x", [1.0] * (DIM + 1), "dimensions"),
        (ALICE, "x", [float("nan")] + [1.0] * (DIM - 1), "non-finite"),
        (ALICE, "x", [0.0] * DIM, "zeros"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    service: MemoryService, scope: Scope, text: str, vector: list[float], message: str
) -> None:
    service.recall(ALICE, "kept", vec(0))
    with pytest.raises(InvalidArgument, match=message):
        service.recall(scope, text, vector)
    assert [m.text for m in service.list_page(ALICE, 10, "", None)[0]] == ["kept"]


def test_a_forged_page_token_is_refused(service: MemoryService) -> None:
    with pytest.raises(InvalidArgument):
        service.list_page(ALICE, 3, "not-a-token", None)


def test_memories_survive_reopening_the_store(tmp_path: Path, clock: Clock) -> None:
    settings = MemorySettings(dimension=DIM)
    store = EdgeStore(str(tmp_path), DIM)
    MemoryService(store, settings, clock).remember(ALICE, Role.USER, "persisted", vec(2))
    store.close()
    reopened = EdgeStore(str(tmp_path), DIM)
    try:
        memories, _ = MemoryService(reopened, settings, clock).list_page(ALICE, 10, "", None)
    finally:
        reopened.close()
    assert [m.text for m in memories] == ["persisted"]
