"""Forgetting laws fitted to the whole Ebbinghaus table, not to one point of it.

A memory of strength `s` written at `t0` has strength `s * R(t - t0)` at `t`, where `R` is
a retention curve with `R(0) = 1` that only falls. It is forgotten (archived, or deleted
from the archive) once that strength is under its tier's threshold, at

    expires_at = t0 + R⁻¹(threshold / s)

which is known when the memory is written, so pruning stays one filtered delete.

The original system used a single exponential through one point of the table, which
forgets every memory of strength 1 at exactly that point's age (a cliff). The curves here:

* `MultiExponential` — a sum of exponentials fitted to all seven points (the default, three
  terms): fast early loss, then a slow tail; a stronger memory lives longer by a
  logarithmic amount, so tiers stay bounded however much a memory is reinforced.
* `PowerLaw` — `(1 + t/τ)^-β`: ever slower loss. Fitted to the table its exponent is
  small (≈ 0.13), so the lifetime grows like `s^(1/β)` ≈ `s^8` and one reinforcement
  keeps a memory for decades; offered, not the default.
* `Exponential` — the original single point (`exponential_through`), kept for the
  "original" preset.
* `NoDecay` — nothing ever fades (a benchmark reference, or for users who want it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bionic_common.memory_types import Tier
from bionic_memory.config import MemorySettings
from bionic_memory.decay import DAY, EBBINGHAUS_CURVE, MINUTE, Cooling
from bionic_memory.records import NEVER

Points = Sequence[tuple[float, float]]  # (delay in seconds, retention)

NEWTON_STEPS = 100


class RetentionCurve(Protocol):
    def retention(self, age: float) -> float:
        """R(age): 1 at age 0, never rising."""

    def age_at(self, retention: float) -> float:
        """The age at which R falls to `retention` (0 < retention < 1); inf if never."""

    def tail_gain(self, age: float) -> float:
        """How much more of a fresh trace's long-run strength one unit carries when added
        to a memory of this age (see `reinforced`)."""


@dataclass(frozen=True, slots=True)
class Exponential:
    rate: float  # 1/s

    def retention(self, age: float) -> float:
        return math.exp(-self.rate * max(age, 0.0))

    def age_at(self, retention: float) -> float:
        return -math.log(retention) / self.rate

    def tail_gain(self, age: float) -> float:
        return math.exp(self.rate * max(age, 0.0))


@dataclass(frozen=True, slots=True)
class MultiExponential:
    """`Σ wᵢ exp(-kᵢ t)` with `Σ wᵢ = 1` and every `wᵢ, kᵢ > 0`."""

    weights: tuple[float, ...]
    rates: tuple[float, ...]  # 1/s

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.rates) or not self.weights:
            raise ValueError("a multi-exponential needs one weight per rate")
        if min(self.weights) <= 0 or min(self.rates) <= 0:
            raise ValueError("weights and rates must be positive")
        if not math.isclose(sum(self.weights), 1.0, rel_tol=1e-9):
            raise ValueError("weights must sum to 1")

    def retention(self, age: float) -> float:
        age = max(age, 0.0)
        return sum(w * math.exp(-k * age) for w, k in zip(self.weights, self.rates, strict=True))

    def age_at(self, retention: float) -> float:
        # ln R is convex (a log-sum-exp of lines) and falls, so Newton's method on
        # ln R(t) = ln r started left of the root climbs to it monotonically, without
        # overshooting. Each term alone bounds the root from below: R(t) >= wᵢ e^(-kᵢ t).
        target = math.log(retention)
        age = max(
            0.0,
            *(math.log(w / retention) / k for w, k in zip(self.weights, self.rates, strict=True)),
        )
        for _ in range(NEWTON_STEPS):
            terms = [w * math.exp(-k * age) for w, k in zip(self.weights, self.rates, strict=True)]
            value = sum(terms)
            slope = -sum(t * k for t, k in zip(terms, self.rates, strict=True)) / value
            step = (target - math.log(value)) / slope
            age += step
            if step <= 1e-12 * max(age, 1.0):
                break
        return age

    def tail_gain(self, age: float) -> float:
        return math.exp(min(self.rates) * max(age, 0.0))


@dataclass(frozen=True, slots=True)
class PowerLaw:
    """`(1 + t/scale)^-exponent`."""

    scale: float  # seconds
    exponent: float

    def retention(self, age: float) -> float:
        return float((1.0 + max(age, 0.0) / self.scale) ** -self.exponent)

    def age_at(self, retention: float) -> float:
        return self.scale * (float(retention ** (-1.0 / self.exponent)) - 1.0)

    def tail_gain(self, age: float) -> float:
        return 1.0  # (1 + (a + t)/τ)^-β / (1 + t/τ)^-β -> 1 as t grows


@dataclass(frozen=True, slots=True)
class NoDecay:
    def retention(self, age: float) -> float:
        return 1.0

    def age_at(self, retention: float) -> float:
        return math.inf

    def tail_gain(self, age: float) -> float:
        return 1.0


class Law(Protocol):
    """What the service needs of a tier's forgetting law (`Cooling` and `Forgetting`)."""

    @property
    def threshold(self) -> float: ...

    def strength(self, s: float, t0: float, now: float) -> float: ...

    def expires_at(self, s: float, t0: float) -> float: ...


@dataclass(frozen=True, slots=True)
class Forgetting:
    """One tier's law: a retention curve and the strength under which a memory leaves."""

    curve: RetentionCurve
    threshold: float

    def strength(self, s: float, t0: float, now: float) -> float:
        return s * self.curve.retention(now - t0)

    def expires_at(self, s: float, t0: float) -> float:
        """When strength `s` set at `t0` falls under the threshold (t0 if it already is;
        NEVER if it never does)."""
        if s <= self.threshold:
            return t0
        return min(t0 + self.curve.age_at(self.threshold / s), NEVER)

    def reinforce(self, s: float, t0: float, now: float, amount: float = 1.0) -> float:
        """Use it or lose it: the current strength plus `amount`, to be set at `now`."""
        return self.strength(s, t0, now) + amount


def exponential_through(delay: float, retention: float) -> Exponential:
    """The original law: the exponential through one curve point, k = -ln(r)/T."""
    if not 0 < retention < 1 or delay <= 0:
        raise ValueError("a curve point needs 0 < retention < 1 and a positive delay")
    return Exponential(rate=-math.log(retention) / delay)


def log_rmse(curve: RetentionCurve, points: Points) -> float:
    """Root mean square error of log retention over the points: the fit's quality."""
    errors = [math.log(curve.retention(t)) - math.log(r) for t, r in points]
    return math.sqrt(sum(e * e for e in errors) / len(errors))


def fit_power_law(points: Points) -> PowerLaw:
    """Least squares in log retention. For a fixed scale τ the best exponent is closed form
    (β = -Σ xᵢ ln rᵢ / Σ xᵢ², xᵢ = ln(1 + tᵢ/τ)); τ is searched on a fine log grid."""
    t = np.array([p[0] for p in points], dtype=np.float64)
    y = np.log(np.array([p[1] for p in points], dtype=np.float64))
    scales = np.logspace(-2, 7, 3000)
    x = np.log1p(t[None, :] / scales[:, None])  # (scales, points)
    beta = -(x @ y) / np.einsum("ij,ij->i", x, x)
    error = ((-beta[:, None] * x - y) ** 2).sum(axis=1)
    best = int(np.argmin(error))
    return PowerLaw(scale=float(scales[best]), exponent=float(beta[best]))


def fit_multi_exponential(
    points: Points,
    terms: int = 3,
    fastest: float = 1 / MINUTE,
    slowest: float = 1 / (365 * DAY),
    grid: int = 60,
) -> MultiExponential:
    """Least squares in log retention over a log grid of rates: for each set of `terms`
    rates the weights (summing to 1) are the linear least-squares solution; sets that need
    a non-positive weight are skipped."""
    t = np.array([p[0] for p in points], dtype=np.float64)
    r = np.array([p[1] for p in points], dtype=np.float64)
    rates = np.logspace(math.log10(slowest), math.log10(fastest), grid)
    combos = np.array(list(itertools.combinations(range(grid), terms)))
    chosen = rates[combos]  # (combos, terms)
    basis = np.exp(-chosen[:, None, :] * t[None, :, None])  # (combos, points, terms)
    # w_last = 1 - Σ others: least squares for the others, by batched normal equations.
    a = basis[:, :, :-1] - basis[:, :, -1:]
    b = r[None, :] - basis[:, :, -1]
    gram = np.einsum("cpi,cpj->cij", a, a)
    rhs = np.einsum("cpi,cp->ci", a, b)
    usable = np.abs(np.linalg.det(gram)) > 1e-300
    free = np.zeros((len(combos), terms - 1))
    free[usable] = np.linalg.solve(gram[usable], rhs[usable][..., None])[..., 0]
    weights = np.concatenate([free, 1.0 - free.sum(axis=1, keepdims=True)], axis=1)
    valid = usable & (weights > 0).all(axis=1)
    if not valid.any():
        raise ValueError("no positive mixture of exponentials fits these points")
    fitted = np.einsum("cpt,ct->cp", basis, weights)
    error = np.where(
        valid, ((np.log(np.maximum(fitted, 1e-300)) - np.log(r)) ** 2).sum(axis=1), np.inf
    )
    best = int(np.argmin(error))
    return MultiExponential(
        weights=tuple(weights[best].tolist()), rates=tuple(chosen[best].tolist())
    )


def long_term_curve(settings: MemorySettings) -> RetentionCurve:
    """The curve long-term and archived memories cool along, as the settings choose."""
    if settings.forgetting_curve == "none":
        return NoDecay()
    if settings.forgetting_curve == "power_law":
        return fit_power_law(EBBINGHAUS_CURVE)
    if settings.forgetting_curve == "multi_exponential":
        return fit_multi_exponential(EBBINGHAUS_CURVE, terms=settings.curve_terms)
    return exponential_through(settings.long_term_delay, settings.long_term_retention)


def tier_laws(settings: MemorySettings) -> dict[Tier, Law]:
    """Each tier's law. Short-term memory keeps the original exponential through its curve
    point. The original long-term law forgets at its point's retention; a fitted curve at
    `long_term_threshold`. The archive cools along the same curve down to
    `archive_threshold`."""
    curve = long_term_curve(settings)
    long_term = Forgetting(
        curve,
        settings.long_term_retention
        if settings.forgetting_curve == "exponential"
        else settings.long_term_threshold,
    )
    short_term: Law = Cooling.from_curve_point(
        settings.short_term_delay, settings.short_term_retention
    )
    return {
        Tier.LONG_TERM: long_term,
        Tier.SHORT_TERM: short_term,
        Tier.ARCHIVE: Forgetting(curve, min(settings.archive_threshold, long_term.threshold)),
    }


def reinforced(law: Law, s: float, t0: float, now: float, amount: float) -> tuple[float, float]:
    """Strength and origin `(s', t0')` after reinforcing by `amount` at `now`.

    A reinforcement is a fresh trace of strength `amount` laid over the memory. A single
    exponential is memoryless, so the original restarts its curve: `(s(now) + amount, now)`,
    exactly the sum of both traces. A fitted curve falls fast at first and slowly later;
    restarting it would push an old memory back onto the steep part, so that being
    recalled made it expire sooner. Instead the memory keeps its age and gains what the
    fresh trace would hold in the long run, `amount * tail_gain(age)` (for a sum of
    exponentials `amount * exp(k_min * age)`, which matches the fresh trace's slow tail
    exactly; its fast part, gone in days, is not carried). For an exponential this is the
    original rule again."""
    curve = law.curve if isinstance(law, Forgetting) else None
    if curve is not None and not isinstance(curve, Exponential):
        return s + amount * curve.tail_gain(now - t0), t0
    return law.strength(s, t0, now) + amount, now


def merged(law: Law, traces: Sequence[tuple[float, float]], now: float) -> tuple[float, float]:
    """Strength and origin `(s', t0')` of one memory standing for the traces `(s, t0)`.

    Their strengths add up. A single exponential is memoryless: `(Σ s(now), now)` is exactly
    the sum of the traces from then on (the original rule). A fitted curve restarted at
    `now` would put the merged memory back onto its steep early part, so that merging old
    memories made them expire sooner; instead the merged memory takes the oldest origin
    and each trace adds `s * tail_gain(t0 - oldest)`: the oldest trace exactly, every
    younger one exactly in the slow tail (its fast part, gone within days, is not carried,
    as in `reinforced`)."""
    curve = law.curve if isinstance(law, Forgetting) else None
    if curve is not None and not isinstance(curve, Exponential):
        origin = min(t0 for _, t0 in traces)
        return sum(s * curve.tail_gain(t0 - origin) for s, t0 in traces), origin
    return sum(law.strength(s, t0, now) for s, t0 in traces), now
