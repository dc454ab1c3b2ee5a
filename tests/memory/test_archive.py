"""The default preset on the real engine: fitted forgetting, salience, the cold archive and
relevance-first recall, against closed forms and constructed cases."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bionic_common.memory_types import Role, Scope, Tier
from bionic_memory.config import MemorySettings
from bionic_memory.decay import DAY
from bionic_memory.forgetting import reinforced, tier_laws
from bionic_memory.salience import initial_strength
from bionic_memory.service import MemoryService
from bionic_memory.store.edge import EdgeStore

DIM = 8
ALICE = Scope("tenant-a", "alice")
T0 = 1_700_000_000.0


def vec(*weights: float) -> list[float]:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(weights)] = weights
    return (v / np.linalg.norm(v)).tolist()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    s = EdgeStore(str(tmp_path), DIM)
    yield s
    s.close()


def service(store: EdgeStore, **settings: object) -> MemoryService:
    return MemoryService(
        store,
        MemorySettings(dimension=DIM, **settings),
        clock=lambda: T0,  # type: ignore[arg-type]
    )


def tiers(svc: MemoryService, now: float) -> dict[str, Tier]:
    """The tier of each stored memory at `now` (an archived memory is a long-term one past
    its expiry, so the tiers depend on the instant)."""
    memories, _ = svc.list_page(ALICE, 100, "", None, now=now)
    return {m.text: m.tier for m in memories if m.tier != Tier.SHORT_TERM}


def test_a_salient_memory_starts_stronger_and_lives_longer(store: EdgeStore) -> None:
    svc = service(store, salience_gain=1.0)
    chat, _ = svc.remember(ALICE, Role.USER, "ok cool", vec(1, 0), now=T0)
    fact, _ = svc.remember(
        ALICE, Role.USER, "My sister Joanna turns 30 on 8 May", vec(0, 1), now=T0
    )
    assert chat.strength == 1.0
    assert fact.strength == pytest.approx(initial_strength("My sister Joanna turns 30 on 8 May", 1))
    law = tier_laws(MemorySettings())[Tier.LONG_TERM]
    assert fact.expires_at == pytest.approx(law.expires_at(fact.strength, T0))
    assert fact.expires_at is not None and chat.expires_at is not None
    assert fact.expires_at > chat.expires_at + 30 * DAY


def test_prune_archives_what_expired_and_deletes_only_past_the_archive_horizon(
    store: EdgeStore,
) -> None:
    svc = service(store, salience_gain=0.0)
    old, _ = svc.remember(ALICE, Role.USER, "old", vec(1, 0), now=T0)
    svc.remember(ALICE, Role.USER, "new", vec(0, 1), now=T0 + 200 * DAY)
    assert old.expires_at is not None
    pruned = svc.prune(old.expires_at + 1)
    assert (pruned.archived, pruned.forgotten_long_term) == (1, 0)
    assert tiers(svc, old.expires_at + 1) == {"old": Tier.ARCHIVE, "new": Tier.LONG_TERM}
    assert tiers(svc, old.expires_at - 1) == {"old": Tier.LONG_TERM, "new": Tier.LONG_TERM}
    archive_law = tier_laws(MemorySettings())[Tier.ARCHIVE]
    gone_at = archive_law.expires_at(1.0, T0)
    assert gone_at > old.expires_at + 200 * DAY  # the archive's horizon is much longer
    assert svc.get(ALICE, old.id, now=old.expires_at + 1).expires_at == pytest.approx(gone_at)
    assert svc.prune(gone_at - DAY).forgotten_archive == 0
    assert svc.prune(gone_at + 1).forgotten_archive == 1
    assert tiers(svc, gone_at + 1) == {
        "new": Tier.ARCHIVE
    }  # "new" has meanwhile cooled into the archive


def test_the_original_preset_deletes_at_its_31_day_cliff(store: EdgeStore) -> None:
    svc = service(store, preset="original")
    svc.remember(ALICE, Role.USER, "old", vec(1, 0), now=T0)
    pruned = svc.prune(T0 + 31 * DAY + 1)
    assert (pruned.archived, pruned.forgotten_long_term) == (0, 1)
    assert tiers(svc, T0 + 31 * DAY + 1) == {}


def test_an_archived_memory_comes_back_only_on_a_strong_cue(store: EdgeStore) -> None:
    svc = service(store, salience_gain=0.0, archive_min_score=0.9)
    old, _ = svc.remember(ALICE, Role.USER, "the cabin code is 4711", vec(1, 0, 0), now=T0)
    assert old.expires_at is not None
    later = old.expires_at + DAY
    svc.prune(later)
    weak = svc.recall(ALICE, "weak cue", vec(1, 1.5, 0), limit=3, dry_run=True, now=later)
    assert weak.memories == []  # cosine 0.55 < 0.9: not recognised
    strong = svc.recall(ALICE, "strong cue", vec(1, 0.1, 0), limit=3, now=later)
    assert [m.text for m in strong.memories] == ["the cabin code is 4711"]
    # recognised and reinforced: back in long-term memory, with the reinforced strength
    assert tiers(svc, later)["the cabin code is 4711"] == Tier.LONG_TERM


def test_relevance_first_recall_keeps_the_relevant_over_the_strong(store: EdgeStore) -> None:
    svc = service(store, salience_gain=0.0)
    for i in range(5):  # a strong, off-topic memory
        svc.remember(ALICE, Role.USER, "strong", vec(0, 0, 1), now=T0 + i)
    svc.remember(ALICE, Role.USER, "relevant", vec(1, 0.2, 0), now=T0 + 10)
    svc.remember(ALICE, Role.USER, "related", vec(1, 0.6, 0), now=T0 + 20)
    recalled = svc.recall(ALICE, "q", vec(1, 0, 0), limit=2, dry_run=True, now=T0 + 30)
    assert [m.text for m in recalled.memories] == ["relevant", "related"]


HISTORY = st.lists(
    st.tuples(st.integers(0, 5), st.floats(0, 200 * DAY), st.booleans()), min_size=1, max_size=20
)


@settings(max_examples=25, deadline=None)
@given(history=HISTORY, after=st.floats(0, 800 * DAY))
def test_the_archive_and_prune_follow_the_closed_form(
    history: list[tuple[int, float, bool]], after: float
) -> None:
    """Replay random writes (repeats reinforce, some pin) on the fitted curve, then check
    the tiers at a later instant and Prune against s * R(T - t0): under the long-term
    threshold a memory is archived, under the archive's it is forgotten."""
    laws = tier_laws(MemorySettings())
    law, floor = laws[Tier.LONG_TERM], laws[Tier.ARCHIVE].threshold
    model: dict[str, tuple[float, float, bool]] = {}  # text -> (strength, t0, pinned)
    now = T0
    with tempfile.TemporaryDirectory() as folder:
        store = EdgeStore(folder, DIM)
        try:
            svc = service(store, salience_gain=0.0)
            for index, dt, pin in history:
                now += dt
                text = f"memory {index}"
                svc.remember(ALICE, Role.USER, text, vec(1, index), pinned=pin, now=now)
                if text not in model:
                    model[text] = (1.0, now, pin)
                    continue
                s, t0, pinned = model[text]
                s, t0 = (s + 1.0, now) if pinned else reinforced(law, s, t0, now, 1.0)
                model[text] = (s, t0, pinned or pin)
            at = now + after
            current = {
                text: s if pinned else law.strength(s, t0, at)
                for text, (s, t0, pinned) in model.items()
            }
            edges = (law.threshold, floor)
            assume(
                not any(math.isclose(c, e, rel_tol=1e-6) for c in current.values() for e in edges)
            )
            archived = {t for t, c in current.items() if c < law.threshold}
            gone = {t for t, c in current.items() if c < floor}
            before = tiers(svc, at)
            pruned = svc.prune(at)
            after_prune = tiers(svc, at)
        finally:
            store.close()
    assert {t for t, tier in before.items() if tier == Tier.ARCHIVE} == archived
    assert (pruned.archived, pruned.forgotten_archive) == (len(archived), len(gone))
    assert pruned.forgotten_long_term == 0
    assert set(after_prune) == set(model) - gone
    assert {t for t, tier in after_prune.items() if tier == Tier.ARCHIVE} == archived - gone


def test_a_merged_memory_keeps_cooling_as_slowly_as_its_members(store: EdgeStore) -> None:
    svc = service(store, salience_gain=0.0)
    old, _ = svc.remember(ALICE, Role.USER, "I love tea", vec(1, 0), now=T0)
    young, _ = svc.remember(ALICE, Role.USER, "I really love tea", vec(1, 0.01), now=T0 + 40 * DAY)
    now = T0 + 60 * DAY
    result = svc.merge(ALICE, old.id, [young.id], now=now)
    assert result.current_strength <= (
        svc.get(ALICE, old.id, now=now).current_strength + young.strength
    )
    later = now + 200 * DAY
    law = tier_laws(MemorySettings())[Tier.LONG_TERM]
    both = law.strength(1.0, T0, later) + law.strength(1.0, T0 + 40 * DAY, later)
    assert svc.get(ALICE, old.id, now=later).current_strength == pytest.approx(both, rel=1e-3)
    assert old.expires_at is not None and young.expires_at is not None
    assert result.expires_at is not None and result.expires_at > young.expires_at
