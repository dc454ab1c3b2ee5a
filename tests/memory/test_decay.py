"""Newton cooling against its closed forms."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bionic_memory.decay import DAY, EBBINGHAUS_CURVE, LONG_TERM, MINUTE, SHORT_TERM, Cooling


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
