"""Forgetting laws fitted to the Ebbinghaus table, against closed forms."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bionic_common.memory_types import Tier
from bionic_memory.config import MemorySettings
from bionic_memory.decay import DAY, EBBINGHAUS_CURVE, LONG_TERM, Cooling
from bionic_memory.forgetting import (
    Exponential,
    Forgetting,
    MultiExponential,
    NoDecay,
    PowerLaw,
    exponential_through,
    fit_multi_exponential,
    fit_power_law,
    log_rmse,
    merged,
    reinforced,
    tier_laws,
)
from bionic_memory.records import NEVER

FIT = fit_multi_exponential(EBBINGHAUS_CURVE)
POWER = fit_power_law(EBBINGHAUS_CURVE)


def test_the_three_term_fit_follows_every_point_of_the_table() -> None:
    assert math.isclose(sum(FIT.weights), 1.0)
    for delay, retention in EBBINGHAUS_CURVE:
        assert FIT.retention(delay) == pytest.approx(retention, rel=0.06)
    assert log_rmse(FIT, EBBINGHAUS_CURVE) < 0.035


def test_the_fits_rank_as_measured_three_terms_then_power_law_then_one_point() -> None:
    one_point = exponential_through(*EBBINGHAUS_CURVE[-1])
    errors = [log_rmse(c, EBBINGHAUS_CURVE) for c in (FIT, POWER, one_point)]
    assert errors == sorted(errors)
    assert errors[2] > 10 * errors[0]


def test_the_power_law_fit_is_the_least_squares_optimum_in_log_space() -> None:
    best = log_rmse(POWER, EBBINGHAUS_CURVE)
    for scale_factor, exponent_delta in ((1.2, 0), (0.8, 0), (1, 0.005), (1, -0.005)):
        other = PowerLaw(POWER.scale * scale_factor, POWER.exponent + exponent_delta)
        assert log_rmse(other, EBBINGHAUS_CURVE) >= best - 1e-9


def test_a_fit_of_points_drawn_from_a_known_mixture_recovers_it() -> None:
    truth = MultiExponential(weights=(0.3, 0.7), rates=(1e-6, 1e-3))
    points = [(t, truth.retention(t)) for t in (60, 600, 3600, 86400, 864000, 8640000)]
    fitted = fit_multi_exponential(points, terms=2, fastest=1e-2, slowest=1e-7, grid=81)
    assert log_rmse(fitted, points) < 0.02


@settings(deadline=None)
@given(st.floats(1e-4, 0.999))
def test_age_at_inverts_retention(retention: float) -> None:
    for curve in (FIT, POWER, Exponential(1e-5)):
        age = curve.age_at(retention)
        assert curve.retention(age) == pytest.approx(retention, rel=1e-5)


def test_the_power_law_lifetime_has_its_closed_form() -> None:
    law = Forgetting(POWER, 0.1)
    s = 2.5
    expected = POWER.scale * ((s / 0.1) ** (1 / POWER.exponent) - 1)
    assert law.expires_at(s, 100.0) == pytest.approx(min(100.0 + expected, NEVER))


@settings(deadline=None)
@given(s=st.floats(0.5, 50), t0=st.floats(0, 2e9), dt=st.floats(0, 800 * DAY))
def test_expiry_is_where_strength_crosses_the_threshold(s: float, t0: float, dt: float) -> None:
    law = Forgetting(FIT, 0.1)
    expires = law.expires_at(s, t0)
    now = t0 + dt
    alive = law.strength(s, t0, now) >= law.threshold
    assert alive == (now <= expires) or math.isclose(now, expires, rel_tol=1e-6)


def test_the_exponential_law_is_the_original_cooling() -> None:
    original = Forgetting(exponential_through(*EBBINGHAUS_CURVE[-1]), EBBINGHAUS_CURVE[-1][1])
    for s, t0, now in ((1.0, 0.0, 10 * DAY), (3.2, 5.0, 90 * DAY)):
        assert original.strength(s, t0, now) == pytest.approx(LONG_TERM.strength(s, t0, now))
        assert original.expires_at(s, t0) == pytest.approx(LONG_TERM.expires_at(s, t0))


def test_the_fitted_lifetime_grows_only_logarithmically_with_strength() -> None:
    """In the tail R(t) ≈ w·e^(-k t), so doubling strength adds ln(2)/k, however strong."""
    law = Forgetting(FIT, 0.1)
    slowest = min(FIT.rates)
    gaps = [law.expires_at(2 * s, 0.0) - law.expires_at(s, 0.0) for s in (4.0, 16.0, 64.0)]
    for gap in gaps:
        assert gap == pytest.approx(math.log(2) / slowest, rel=1e-3)
    # whereas the power law's lifetime multiplies
    power = Forgetting(POWER, 0.1)
    assert power.expires_at(2.0, 0.0) > 50 * power.expires_at(1.0, 0.0)


def test_a_memory_of_strength_one_is_no_longer_gone_at_31_days() -> None:
    settings = MemorySettings()
    law = tier_laws(settings)[Tier.LONG_TERM]
    assert law.expires_at(1.0, 0.0) == pytest.approx(FIT.age_at(settings.long_term_threshold))
    assert 120 * DAY < law.expires_at(1.0, 0.0) < 200 * DAY


def test_no_decay_never_expires() -> None:
    law = Forgetting(NoDecay(), 0.1)
    assert law.strength(1.0, 0.0, 1e9) == 1.0
    assert law.expires_at(1.0, 0.0) == NEVER


def test_the_presets_pick_their_laws() -> None:
    original = tier_laws(MemorySettings(preset="original"))
    assert original[Tier.LONG_TERM].threshold == EBBINGHAUS_CURVE[-1][1]
    assert original[Tier.LONG_TERM].expires_at(1.0, 0.0) == pytest.approx(31 * DAY)
    default = tier_laws(MemorySettings())
    assert isinstance(default[Tier.LONG_TERM], Forgetting)
    assert isinstance(default[Tier.LONG_TERM].curve, MultiExponential)
    assert default[Tier.ARCHIVE].threshold == 0.01
    assert isinstance(default[Tier.SHORT_TERM], Cooling)
    assert isinstance(
        tier_laws(MemorySettings(forgetting_curve="power_law"))[Tier.ARCHIVE], Forgetting
    )


def test_reinforcing_on_a_fitted_curve_adds_a_fresh_traces_tail_and_keeps_the_age() -> None:
    law = Forgetting(FIT, 0.1)
    t0, now = 0.0, 40 * DAY
    s, origin = reinforced(law, 1.0, t0, now, 0.3)
    assert origin == t0
    assert s == pytest.approx(1.0 + 0.3 * math.exp(min(FIT.rates) * now))
    # once the fast parts are gone it is exactly the old memory plus a fresh trace
    for later in (now + 60 * DAY, now + 300 * DAY):
        both = law.strength(1.0, t0, later) + law.strength(0.3, now, later)
        assert law.strength(s, origin, later) == pytest.approx(both, rel=1e-3)
    assert law.expires_at(s, origin) > law.expires_at(1.0, t0)


def test_the_power_law_keeps_the_age_and_adds_the_amount() -> None:
    assert reinforced(Forgetting(POWER, 0.1), 2.0, 5.0, 50 * DAY, 0.5) == (2.5, 5.0)


def test_reinforcing_on_the_original_exponential_restarts_its_curve() -> None:
    s, origin = reinforced(LONG_TERM, 2.0, 0.0, 10 * DAY, 1.0)
    assert origin == 10 * DAY
    assert s == pytest.approx(LONG_TERM.reinforce(2.0, 0.0, 10 * DAY))
    # which for an exponential is the same future as keeping the age
    kept = Forgetting(exponential_through(*EBBINGHAUS_CURVE[-1]), 0.211)
    for later in (11 * DAY, 60 * DAY):
        assert kept.strength(s, origin, later) == pytest.approx(
            kept.strength(2.0, 0.0, later) + kept.strength(1.0, 10 * DAY, later)
        )


def test_merging_on_a_fitted_curve_keeps_the_oldest_age_and_every_traces_tail() -> None:
    law = Forgetting(FIT, 0.1)
    traces = [(2.0, 10 * DAY), (1.0, 0.0), (1.5, 30 * DAY)]
    s, origin = merged(law, traces, 45 * DAY)
    assert origin == 0.0
    assert s == pytest.approx(sum(a * math.exp(min(FIT.rates) * t0) for a, t0 in traces))
    for later in (45 * DAY, 90 * DAY, 400 * DAY):
        both = sum(law.strength(a, t0, later) for a, t0 in traces)
        assert law.strength(s, origin, later) <= both * (1 + 1e-12)  # young fast parts go
        if later - 30 * DAY > 40 * DAY:  # and once they are gone it is exactly the sum
            assert law.strength(s, origin, later) == pytest.approx(both, rel=1e-3)
    # restarting at 45 days would have lost most of it within a week
    restarted = Forgetting(FIT, 0.1).strength(
        sum(law.strength(a, t0, 45 * DAY) for a, t0 in traces), 45 * DAY, 52 * DAY
    )
    assert law.strength(s, origin, 52 * DAY) > 1.5 * restarted


def test_merging_on_the_original_exponential_is_the_sum_now() -> None:
    traces = [(2.0, 0.0), (1.0, 5 * DAY)]
    s, origin = merged(LONG_TERM, traces, 10 * DAY)
    assert origin == 10 * DAY
    assert s == pytest.approx(sum(LONG_TERM.strength(a, t0, 10 * DAY) for a, t0 in traces))
