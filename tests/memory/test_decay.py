"""Newton cooling against its closed forms."""

from __future__ import annotations

import math
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bionic_common.memory_types import Role, Scope
from bionic_memory.config import MemorySettings
from bionic_memory.decay import DAY, EBBINGHAUS_CURVE, LONG_TERM, MINUTE, SHORT_TERM, Cooling
from bionic_memory.service import MemoryService
from bionic_memory.store.edge import EdgeStore


def test_the_tiers_cool_at_their_curve_points() -> None:
    assert LONG_TERM.k == pytest.approx(-math.log(0.211) / (31 * DAY))
    assert LONG_TERM.threshold == 0.211
    assert SHORT_TERM.k == pytest.approx(-math.log(0.582) / (20 * MINUTE))
    assert SHORT_TERM.threshold == 0.582


@pytest.mark.parametrize(("delay", "retention"), EBBINGHAUS_CURVE)
def test_a_fresh_memory_reaches_its_points_retention_after_its_delay(
    delay: float, retention: float
) -> None:
    cooling = Cooling.from_curve_point(delay, retention)
    assert cooling.strength(1.0, 1000.0, 1000.0 + delay) == pytest.approx(retention)
    assert cooling.expires_at(1.0, 1000.0) == pytest.approx(1000.0 + delay)


@given(s=st.floats(0.3, 50), t0=st.floats(0, 2e9), dt=st.floats(0, 400 * DAY))
def test_expiry_is_where_strength_crosses_the_threshold(s: float, t0: float, dt: float) -> None:
    expires = LONG_TERM.expires_at(s, t0)
    now = t0 + dt
    alive = LONG_TERM.strength(s, t0, now) >= LONG_TERM.threshold
    assert alive == (now <= expires) or math.isclose(now, expires, rel_tol=1e-9)


def test_reinforcement_adds_one_to_the_cooled_strength() -> None:
    t0, now = 0.0, 10 * DAY
    assert LONG_TERM.reinforce(2.0, t0, now) == pytest.approx(
        2.0 * math.exp(-LONG_TERM.k * now) + 1
    )


def test_a_weak_memory_is_already_expired() -> None:
    assert LONG_TERM.expires_at(0.1, 500.0) == 500.0


def test_curve_points_are_validated() -> None:
    with pytest.raises(ValueError):
        Cooling.from_curve_point(60, 1.5)


HISTORY = st.lists(
    st.tuples(st.integers(0, 5), st.floats(0, 40 * DAY), st.booleans()), min_size=1, max_size=25
)


@settings(max_examples=25, deadline=None)
@given(history=HISTORY, after=st.floats(0, 80 * DAY))
def test_prune_removes_exactly_the_memories_whose_strength_fell_under_the_threshold(
    history: list[tuple[int, float, bool]], after: float
) -> None:
    """Replay random writes (repeats reinforce, some pin) on the real engine, then check
    Prune against the closed form s * exp(-k (T - t0)) < threshold. The store deletes
    in chunks of 2 found in pages of 3, so Prune takes several engine calls."""
    scope = Scope("t", "u")
    model: dict[str, tuple[float, float, bool]] = {}  # text -> (strength, t0, pinned)
    now = 1_000_000.0
    with tempfile.TemporaryDirectory() as folder:
        store = EdgeStore(folder, 4, delete_chunk=2, delete_page=3)
        try:
            service = MemoryService(store, MemorySettings(preset="original", dimension=4))
            for index, dt, pin in history:
                now += dt
                text = f"memory {index}"
                service.remember(
                    scope, Role.USER, text, [1.0, index, 0.5, 0.0], pinned=pin, now=now
                )
                s, t0, pinned = model.get(text, (0.0, now, False))
                current = s if pinned else LONG_TERM.strength(s, t0, now)
                model[text] = (current + 1.0, now, pinned or pin)
            prune_at = now + after
            expected = {
                text
                for text, (s, t0, pinned) in model.items()
                if not pinned and LONG_TERM.strength(s, t0, prune_at) < LONG_TERM.threshold
            }
            before = {m.text for m in service.list_page(scope, 100, "", None)[0]}
            pruned = service.prune(now=prune_at)
            after_prune = {m.text for m in service.list_page(scope, 100, "", None)[0]}
        finally:
            store.close()
    assert before == set(model)
    assert before - after_prune == expected
    assert pruned.forgotten_long_term == len(expected)
