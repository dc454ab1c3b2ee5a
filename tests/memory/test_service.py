"""Memory logic on every backend (the congruence suite, part 2): the bionic algorithm,
tenancy and data management, on a clock the tests control."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from bionic_common.memory_types import Exported, Role, Scope, Tier
from bionic_memory.config import MemorySettings
from bionic_memory.decay import DAY, LONG_TERM, MINUTE, SHORT_TERM
from bionic_memory.errors import InvalidArgument, NotFound
from bionic_memory.service import MemoryService
from bionic_memory.store.base import MemoryStore
from bionic_memory.store.edge import EdgeStore
from bionic_memory.store.qdrant import QdrantStore
from tests.memory.conftest import DIM

ALICE = Scope("tenant-a", "alice")
BOB = Scope("tenant-a", "bob")
MALLORY = Scope("tenant-b", "alice")
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def vec(i: int, wobble: float = 0.0) -> list[float]:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = 0.1 + wobble
    return v.tolist()


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(store: MemoryStore, clock: Clock) -> MemoryService:
    return MemoryService(
        store, MemorySettings(preset="original", dimension=DIM, recall_limit=3), clock=clock
    )


def texts(service: MemoryService, scope: Scope, tier: Tier | None = Tier.LONG_TERM) -> list[str]:
    return sorted(m.text for m in service.list_page(scope, 500, "", tier)[0])


def test_recall_stores_the_message_and_returns_related_memories_oldest_first(
    service: MemoryService, clock: Clock
) -> None:
    for i, text in enumerate(["tea", "coffee", "cats", "dogs"]):
        service.recall(ALICE, text, vec(i))
        clock.now += 60
    result = service.recall(ALICE, "what about tea?", vec(0))
    assert result.stored is not None and result.stored.text == "what about tea?"
    assert result.stored.role == Role.USER and result.stored.tier == Tier.LONG_TERM
    recalled = [m.text for m in result.memories]
    assert "tea" in recalled and "what about tea?" not in recalled
    assert len(recalled) == 3
    assert all(m.tier == Tier.SHORT_TERM for m in result.memories)
    assert [m.created_at for m in result.memories] == sorted(m.created_at for m in result.memories)


def test_recall_reinforces_hits_by_their_softmax_share_and_promotes_them(
    service: MemoryService, clock: Clock
) -> None:
    vectors = {"tea": vec(0), "green tea": vec(0, 0.3), "coffee": vec(1)}
    for text, v in vectors.items():
        service.remember(ALICE, Role.USER, text, v)
    t1 = T0 + 2 * DAY
    query = vec(0, 0.1)
    service.recall(ALICE, "tea again", query, dry_run=True, now=t1)
    assert texts(service, ALICE, Tier.SHORT_TERM) == []  # a preview changes nothing
    service.recall(ALICE, "tea again", query, now=t1)
    scores = {t: cosine(v, query) for t, v in vectors.items()}
    weights = {t: math.exp(s) for t, s in scores.items()}
    share = {t: w / sum(weights.values()) for t, w in weights.items()}
    long_term = {m.text: m for m in service.list_page(ALICE, 50, "", Tier.LONG_TERM)[0]}
    for text in vectors:
        expected = LONG_TERM.strength(1.0, T0, t1) + share[text]
        assert long_term[text].strength == pytest.approx(expected, rel=1e-4)
        assert long_term[text].updated_at == t1
        assert long_term[text].expires_at == pytest.approx(LONG_TERM.expires_at(expected, t1))
    copies = {m.text: m for m in service.list_page(ALICE, 50, "", Tier.SHORT_TERM)[0]}
    assert set(copies) == set(vectors)
    assert copies["tea"].strength == 1.0 and copies["tea"].created_at == T0
    assert copies["tea"].expires_at == pytest.approx(t1 + 20 * MINUTE)
    t2 = t1 + 5 * MINUTE
    service.recall(ALICE, "more tea", query, now=t2)
    again = {m.text: m for m in service.list_page(ALICE, 50, "", Tier.SHORT_TERM)[0]}
    # the 3 hits now include "tea again"; recompute its shares over the new hit set
    hit_scores = {**scores, "tea again": 1.0}
    total = sum(math.exp(s) for s in hit_scores.values())
    expected_copy = SHORT_TERM.strength(1.0, t1, t2) + math.exp(scores["tea"]) / total
    assert again["tea"].strength == pytest.approx(expected_copy, rel=1e-4)


def on_qdrant_local(clock: Clock, **settings: Any) -> tuple[QdrantClient, MemoryService]:
    """A service on qdrant-client's local mode (the calls a server gets), remembering three
    drinks of ALICE's."""
    with warnings.catch_warnings():  # local mode ignores payload indexes, and says so
        warnings.simplefilter("ignore", UserWarning)
        client = QdrantClient(location=":memory:")
        store = QdrantStore(client, "memories", DIM)
    service = MemoryService(store, MemorySettings(dimension=DIM, **settings), clock=clock)
    for text, v in {"tea": vec(0), "green tea": vec(0, 0.3), "coffee": vec(1)}.items():
        service.remember(ALICE, Role.USER, text, v)
    return client, service


def batches(
    monkeypatch: pytest.MonkeyPatch, client: QdrantClient, batched: str, single: str
) -> list[list[Any]]:
    """What each call of `client.<batched>` carries from now on; `client.<single>`, the
    one-at-a-time request it replaces, fails the test."""
    sent: list[list[Any]] = []
    send = getattr(client, batched)

    def counted(collection_name: str, items: list[Any], **kwargs: Any) -> Any:
        sent.append(items)
        return send(collection_name, items, **kwargs)

    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a request {batched} should have carried")

    monkeypatch.setattr(client, batched, counted)
    monkeypatch.setattr(client, single, refused)
    return sent


def test_a_recall_asks_a_qdrant_server_its_searches_in_one_request(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, service = on_qdrant_local(clock, recall_limit=3)
    sent = batches(monkeypatch, client, "query_batch_points", "query_points")
    recall = service.recall(ALICE, "tea again", vec(0, 0.1), now=T0 + DAY)
    assert {m.text for m in recall.memories} == {"tea", "green tea", "coffee"}
    # long-term memory and the archive, each by cosine and BM25, then short-term memory
    assert len(sent) == 1 and len(sent[0]) == 5
    sent.clear()
    service.remember(ALICE, Role.ASSISTANT, "more tea", vec(0, 0.2), reinforce_related=True)
    assert len(sent) == 1 and len(sent[0]) == 2  # long-term, by cosine and BM25


def test_a_recall_sends_its_reinforcements_to_a_qdrant_server_in_one_request(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, service = on_qdrant_local(clock, preset="original", recall_limit=3)
    service.recall(ALICE, "tea again", vec(0, 0.1), now=T0 + DAY)  # copies into STM
    sent = batches(monkeypatch, client, "batch_update_points", "set_payload")
    service.recall(ALICE, "more tea", vec(0, 0.1), dry_run=True, now=T0 + DAY + 60)
    assert sent == []  # a preview writes nothing
    service.recall(ALICE, "more tea", vec(0, 0.1), now=T0 + DAY + 60)
    # the 4 long-term hits (every memory but the message itself) and the 3 short-term
    # copies the first recall made, in one request
    assert len(sent) == 1 and len(sent[0]) == 7


def test_short_term_memory_forgets_after_its_twenty_minute_point(
    service: MemoryService, clock: Clock
) -> None:
    service.remember(ALICE, Role.USER, "tea", vec(0))
    service.recall(ALICE, "tea?", vec(0), now=T0 + 1)
    assert texts(service, ALICE, Tier.SHORT_TERM) == ["tea"]
    almost = service.prune(now=T0 + 1 + 20 * MINUTE - 1)
    assert almost.forgotten_short_term == 0
    pruned = service.prune(now=T0 + 1 + 20 * MINUTE + 1)
    assert pruned.forgotten_short_term == 1 and pruned.forgotten_long_term == 0
    assert texts(service, ALICE, Tier.SHORT_TERM) == []


def test_expired_memories_are_not_recalled_even_before_a_prune(service: MemoryService) -> None:
    service.remember(ALICE, Role.USER, "old tea", vec(0))
    later = T0 + 32 * DAY
    assert service.search(ALICE, vec(0), now=later) == []
    assert service.recall(ALICE, "tea?", vec(0), now=later).memories == []


def test_same_content_reinforces_instead_of_duplicating(
    service: MemoryService, clock: Clock
) -> None:
    first = service.recall(ALICE, "I love jasmine tea", vec(0)).stored
    clock.now += 2 * DAY
    again = service.recall(ALICE, "I love jasmine tea", vec(0)).stored
    assert first is not None and again is not None
    assert again.id == first.id
    assert again.created_at == first.created_at and again.updated_at == clock.now
    assert again.strength == pytest.approx(LONG_TERM.strength(1.0, first.updated_at, clock.now) + 1)
    assert texts(service, ALICE) == ["I love jasmine tea"]


def test_an_idempotency_key_applies_a_write_once(service: MemoryService, clock: Clock) -> None:
    memory, created = service.remember(ALICE, Role.ASSISTANT, "Hello!", vec(1), {}, "req-1")
    clock.now += 60
    again, created_again = service.remember(ALICE, Role.ASSISTANT, "Hello!", vec(1), {}, "req-1")
    assert created and not created_again
    assert again.strength == memory.strength and again.updated_at == memory.updated_at
    third, _ = service.remember(ALICE, Role.ASSISTANT, "Hello!", vec(1), {}, "req-2")
    assert third.strength > again.current_strength


def test_a_recall_and_a_remember_with_the_same_key_store_and_reinforce_once(
    service: MemoryService, clock: Clock
) -> None:
    """The gateway's Recall failed after it stored (its answer was lost): the worker's
    remember_user_turn of the same turn, keyed by the same request id, changes nothing."""
    service.remember(ALICE, Role.USER, "tea", vec(0))
    clock.now += DAY
    stored = service.recall(ALICE, "tea again", vec(0, 0.1), idempotency_key="req-1").stored
    state = {(m.tier, m.text): m.strength for m in service.list_page(ALICE, 50, "", None)[0]}
    clock.now += 60
    again = service.recall(ALICE, "tea again", vec(0, 0.1), idempotency_key="req-1").stored
    retried, created = service.remember(
        ALICE, Role.USER, "tea again", vec(0, 0.1), {}, "req-1", reinforce_related=True
    )
    assert stored is not None and again is not None and not created
    assert retried.id == again.id == stored.id
    assert retried.strength == again.strength == stored.strength
    after = {(m.tier, m.text): m.strength for m in service.list_page(ALICE, 50, "", None)[0]}
    assert after == state  # nothing stored, reinforced or promoted twice
    later, _ = service.remember(ALICE, Role.USER, "tea again", vec(0, 0.1), {}, "req-2")
    assert later.strength > retried.current_strength  # another turn still reinforces


def test_a_reply_reinforces_what_it_relates_to_once_per_key(service: MemoryService) -> None:
    service.remember(ALICE, Role.USER, "tea", vec(0))
    later = T0 + DAY
    for _ in range(2):
        service.remember(
            ALICE, Role.ASSISTANT, "tea is nice", vec(0), {}, "k", reinforce_related=True, now=later
        )
    (tea,) = [m for m in service.list_page(ALICE, 50, "", Tier.LONG_TERM)[0] if m.text == "tea"]
    assert tea.strength == pytest.approx(LONG_TERM.strength(1.0, T0, later) + 1.0)  # share 1
    assert texts(service, ALICE, Tier.SHORT_TERM) == ["tea"]


def test_pinned_memories_never_cool_or_expire(service: MemoryService) -> None:
    pinned, _ = service.remember(ALICE, Role.USER, "my name is Achen", vec(2), pinned=True)
    assert pinned.expires_at is None
    far = T0 + 3650 * DAY
    assert service.prune(now=far).forgotten_long_term == 0
    assert service.get(ALICE, pinned.id, now=far).current_strength == 1.0
    unpinned = service.update(ALICE, pinned.id, pinned=False, now=far)
    assert unpinned.expires_at == pytest.approx(LONG_TERM.expires_at(1.0, far))
    assert service.prune(now=far + 32 * DAY).forgotten_long_term == 1


def test_scopes_never_see_each_other(service: MemoryService) -> None:
    secret, _ = service.remember(ALICE, Role.USER, "alice's secret", vec(0))
    service.recall(MALLORY, "mallory's note", vec(0))
    assert [m.text for m in service.recall(BOB, "secret?", vec(0)).memories] == []
    assert [m.text for m in service.recall(MALLORY, "secret?", vec(0)).memories] == [
        "mallory's note"
    ]
    assert texts(service, BOB) == ["secret?"]
    for intruder in (BOB, MALLORY):
        with pytest.raises(NotFound):
            service.get(intruder, secret.id)
        with pytest.raises(NotFound):
            service.update(intruder, secret.id, pinned=True)
        assert not service.delete(intruder, secret.id)
    assert service.get(ALICE, secret.id).text == "alice's secret"


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


def test_update_edits_text_with_its_vector_and_merges_metadata(service: MemoryService) -> None:
    memory, _ = service.remember(ALICE, Role.USER, "I like tea", vec(0), {"a": 1, "b": 2})
    service.recall(ALICE, "tea?", vec(0))
    with pytest.raises(InvalidArgument, match="vector"):
        service.update(ALICE, memory.id, text="I like coffee")
    edited = service.update(
        ALICE, memory.id, text="I like coffee", vector=vec(5), metadata={"b": None, "c": 3}
    )
    assert edited.text == "I like coffee" and edited.metadata == {"a": 1, "c": 3}
    assert service.search(ALICE, vec(5), limit=1)[0].id == memory.id
    assert texts(service, ALICE, Tier.SHORT_TERM) == []  # the stale copy went with the edit


def test_a_summary_becomes_what_recall_matches(service: MemoryService) -> None:
    memory, _ = service.remember(ALICE, Role.ASSISTANT, "a long story " * 50, vec(0))
    summarised = service.set_summary(
        ALICE, memory.id, "a story", vec(4), metadata={"summary": "llm"}
    )
    assert summarised.summary == "a story" and summarised.text == memory.text
    assert summarised.metadata == {"summary": "llm"}
    assert service.search(ALICE, vec(4), limit=1)[0].id == memory.id


def test_delete_and_forget_user_cover_both_tiers(service: MemoryService) -> None:
    tea, _ = service.remember(ALICE, Role.USER, "tea", vec(0))
    service.recall(ALICE, "tea?", vec(0))
    service.recall(BOB, "bob's tea", vec(0))
    assert service.delete(ALICE, tea.id) and not service.delete(ALICE, tea.id)
    assert texts(service, ALICE, None) == ["tea?"]
    assert service.forget_user(ALICE) == 1
    assert texts(service, ALICE, None) == [] and texts(service, BOB, None) == ["bob's tea"]


def test_export_and_import_keep_times_strengths_and_metadata(
    service: MemoryService, clock: Clock
) -> None:
    service.remember(ALICE, Role.USER, "tea", vec(0), {"dia_id": "D1:1"})
    clock.now += DAY
    service.recall(ALICE, "tea?", vec(0))
    exported: list[Exported] = []
    offset = None
    while True:
        page, offset = service.export_page(ALICE, offset)
        exported += page
        if offset is None:
            break
    assert len(exported) == 3  # two long-term memories and one short-term copy
    assert service.import_batch(ALICE, exported) == (0, 3)  # already there
    assert service.import_batch(MALLORY, exported) == (3, 0)  # ids held elsewhere: new ids
    before = {(m.memory.text, m.memory.tier): m.memory for m in exported}
    after = {(m.text, m.tier): m for m in service.list_page(MALLORY, 50, "", None)[0]}
    assert set(after) == set(before)
    for key, original in before.items():
        copy = after[key]
        assert copy.id != original.id and copy.scope == MALLORY
        assert (copy.created_at, copy.updated_at, copy.strength) == (
            original.created_at,
            original.updated_at,
            original.strength,
        )
        assert copy.metadata == original.metadata and copy.expires_at == original.expires_at
    assert texts(service, ALICE, None) == ["tea", "tea", "tea?"]


def test_an_import_is_checked_whole_before_anything_is_written(service: MemoryService) -> None:
    memory, _ = service.remember(ALICE, Role.USER, "tea", vec(0))
    good = Exported(memory, vec(0))
    bad = Exported(memory, [1.0] * (DIM + 1))
    with pytest.raises(InvalidArgument, match="item 1"):
        service.import_batch(BOB, [good, bad])
    assert texts(service, BOB, None) == []


def test_stats_count_tiers_and_show_the_next_expiries(service: MemoryService) -> None:
    service.remember(ALICE, Role.USER, "tea", vec(0))
    service.remember(ALICE, Role.USER, "pinned", vec(1), pinned=True)
    service.recall(ALICE, "tea?", vec(0), now=T0 + 10)
    stats = {s.tier: s for s in service.stats(ALICE, now=T0 + 10)}
    ltm, stm = stats[Tier.LONG_TERM], stats[Tier.SHORT_TERM]
    assert (ltm.count, ltm.pinned, stm.count) == (3, 1, 2)
    assert stm.next_expiries[0] == pytest.approx(T0 + 10 + 20 * MINUTE)
    assert len(ltm.next_expiries) == 2  # the pinned one never expires
    assert ltm.strength_max > 1.0 and stats[Tier.ARCHIVE].count == 0


def test_list_scopes_names_every_scope_with_memories(service: MemoryService) -> None:
    for scope in (ALICE, BOB, MALLORY):
        service.remember(scope, Role.USER, "hi", vec(0))
    assert sorted(service.list_scopes(), key=str) == sorted([ALICE, BOB, MALLORY], key=str)
    assert sorted(service.list_scopes("tenant-a"), key=str) == sorted([ALICE, BOB], key=str)


def test_near_duplicates_are_found_and_merged_for_good(service: MemoryService) -> None:
    a, _ = service.remember(ALICE, Role.USER, "I love tea", vec(0), {"x": 1})
    b, _ = service.remember(ALICE, Role.USER, "I really love tea", vec(0, 0.01), {"y": 2})
    c, _ = service.remember(ALICE, Role.USER, "cats", vec(3))
    foreign, _ = service.remember(BOB, Role.USER, "I love tea", vec(0))
    service.remember(ALICE, Role.USER, "I love tea", vec(0), now=T0 + 60)  # a is strongest
    clusters, scanned = service.scan_for_suppression(ALICE)
    assert scanned == 3
    assert [(cl.representative_id, cl.member_ids) for cl in clusters] == [(a.id, [b.id])]
    now = T0 + DAY
    expected = service.get(ALICE, a.id, now=now).current_strength + (
        service.get(ALICE, b.id, now=now).current_strength
    )
    merged = service.merge(ALICE, a.id, [b.id, foreign.id], now=now)
    assert merged.strength == pytest.approx(expected)
    assert merged.metadata == {"x": 1, "y": 2} and merged.source_ids == [b.id]
    assert service.get(BOB, foreign.id).text == "I love tea"
    again = service.merge(ALICE, a.id, [b.id], now=now)
    assert again.strength == merged.strength
    assert texts(service, ALICE) == ["I love tea", "cats"]


def test_time_is_injectable_per_request(service: MemoryService) -> None:
    memory, _ = service.remember(ALICE, Role.USER, "history", vec(0), now=1_000_000.0)
    assert memory.created_at == 1_000_000.0
    assert service.get(ALICE, memory.id, now=1_000_000.0 + DAY).current_strength == pytest.approx(
        LONG_TERM.strength(1.0, 0, DAY)
    )
    with pytest.raises(InvalidArgument, match="now"):
        service.remember(ALICE, Role.USER, "x", vec(0), now=float("nan"))


def test_a_dry_run_recalls_without_storing(service: MemoryService) -> None:
    service.recall(ALICE, "tea", vec(0))
    preview = service.recall(ALICE, "tea?", vec(0), dry_run=True)
    assert preview.stored is None and [m.text for m in preview.memories] == ["tea"]
    assert texts(service, ALICE, None) == ["tea"]


BAD_INPUT = [
    (Scope("", "u"), "x", vec(0), "scope"),
    (Scope("t", "u\x00"), "x", vec(0), "control"),
    (ALICE, "   ", vec(0), "empty"),
    (ALICE, "x" * 1_000_000, vec(0), "characters"),
    (ALICE, "x", [1.0] * (DIM + 1), "dimensions"),
    (ALICE, "x", [float("nan")] + [1.0] * (DIM - 1), "non-finite"),
    (ALICE, "x", [0.0] * DIM, "zeros"),
]


def test_bad_input_is_refused_and_changes_nothing(service: MemoryService) -> None:
    service.recall(ALICE, "kept", vec(0))
    for scope, text, vector, message in BAD_INPUT:
        with pytest.raises(InvalidArgument, match=message):
            service.recall(scope, text, vector)
        with pytest.raises(InvalidArgument, match=message):
            service.remember(scope, Role.USER, text, vector)
    assert texts(service, ALICE, None) == ["kept"]


def test_a_forged_page_token_or_id_is_refused(service: MemoryService) -> None:
    with pytest.raises(InvalidArgument):
        service.list_page(ALICE, 3, "not-a-token", None)
    with pytest.raises(InvalidArgument, match="UUID"):
        service.get(ALICE, "../etc/passwd")


def test_memories_survive_reopening_the_edge_store(tmp_path: Path, clock: Clock) -> None:
    settings = MemorySettings(preset="original", dimension=DIM)
    store = EdgeStore(str(tmp_path), DIM)
    MemoryService(store, settings, clock).remember(ALICE, Role.USER, "persisted", vec(2))
    store.close()
    reopened = EdgeStore(str(tmp_path), DIM)
    try:
        memories, _ = MemoryService(reopened, settings, clock).list_page(ALICE, 10, "", None)
    finally:
        reopened.close()
    assert [m.text for m in memories] == ["persisted"]


def test_what_a_write_returns_is_what_every_read_returns(
    service: MemoryService, clock: Clock
) -> None:
    """Instants and strengths at full float precision (the engine reads a payload number
    of 17 digits back with up to one ulp of error) come back from reads as written."""
    written = {}
    for i in range(40):
        clock.now = T0 + i * 1234.567891234567 + 1 / 3
        memory, _ = service.remember(ALICE, Role.USER, f"fact {i}", vec(i, wobble=i / 100))
        written[memory.id] = memory
    for i in range(0, 40, 4):  # the same again reinforces: s(now) + 1 from now on
        clock.now += 0.123456789
        memory, _ = service.remember(ALICE, Role.USER, f"fact {i}", vec(i, wobble=i / 100))
        written[memory.id] = memory
    for memory_id, memory in written.items():
        read = service.get(ALICE, memory_id)
        assert (read.created_at, read.updated_at, read.strength) == (
            memory.created_at,
            memory.updated_at,
            memory.strength,
        )
