"""Per-tenant rate limits: one token bucket per tenant, in process, in bounded memory."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from bionic_gateway.config import GatewaySettings


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """`requests` per `period` seconds per tenant, up to `burst` at once.

    Each tenant's bucket holds up to `burst` tokens and refills at requests/period a second;
    a request takes one token or waits for it. At most `max_tenants` buckets are kept: the
    least recently seen tenant's is dropped first (it comes back full, the same as a tenant
    that waited long enough)."""

    def __init__(
        self,
        requests: int,
        period: float,
        burst: int,
        max_tenants: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = requests / period
        self._burst = float(burst)
        self._max_tenants = max_tenants
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> RateLimiter | None:
        """None when no limit is configured."""
        if not settings.rate_limit_requests:
            return None
        return cls(
            settings.rate_limit_requests,
            settings.rate_limit_period,
            settings.rate_limit_burst or settings.rate_limit_requests,
            settings.rate_limit_tenants,
        )

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, tenant: str) -> int:
        """0 when the request may go on (a token is taken), else whole seconds to wait."""
        now = self._clock()
        bucket = self._buckets.pop(tenant, None)
        if bucket is None:
            bucket = _Bucket(self._burst, now)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
        self._buckets[tenant] = bucket  # most recently seen last
        while len(self._buckets) > self._max_tenants:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket.tokens) / self._rate))
