"""Newton cooling over the Ebbinghaus retention curve.

A memory of strength `s` set at `t0` has strength `s * exp(-k * (t - t0))` at `t`.
The cooling rate comes from one point (T, r) of the retention curve: `k = -ln(r) / T`,
and a memory is forgotten once its strength falls under that point's retention r.
Because strength only decays between writes, the forgetting instant is known when
a memory is written: `expires_at = t0 + ln(s / r) / k`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# Ebbinghaus: retention r after delay T (seconds).
EBBINGHAUS_CURVE: tuple[tuple[float, float], ...] = (
    (20 * MINUTE, 0.582),
    (1 * HOUR, 0.442),
    (9 * HOUR, 0.358),
    (1 * DAY, 0.337),
    (2 * DAY, 0.278),
    (6 * DAY, 0.254),
    (31 * DAY, 0.211),
)


@dataclass(frozen=True, slots=True)
class Cooling:
    """One tier's cooling law: the rate `k` (1/s) and the forgetting threshold."""

    k: float
    threshold: float

    @classmethod
    def from_curve_point(cls, delay: float, retention: float) -> Cooling:
        if not 0 < retention < 1 or delay <= 0:
            raise ValueError("a curve point needs 0 < retention < 1 and a positive delay")
        return cls(k=-math.log(retention) / delay, threshold=retention)

    def strength(self, s: float, t0: float, now: float) -> float:
        return s * math.exp(-self.k * max(now - t0, 0.0))

    def expires_at(self, s: float, t0: float) -> float:
        """When strength `s` set at `t0` falls under the threshold (t0 if it already is)."""
        if s <= self.threshold:
            return t0
        return t0 + math.log(s / self.threshold) / self.k

    def reinforce(self, s: float, t0: float, now: float, amount: float = 1.0) -> float:
        """Use it or lose it: the cooled strength plus `amount`, to be set at `now`."""
        return self.strength(s, t0, now) + amount


LONG_TERM = Cooling.from_curve_point(*EBBINGHAUS_CURVE[-1])
SHORT_TERM = Cooling.from_curve_point(*EBBINGHAUS_CURVE[0])
