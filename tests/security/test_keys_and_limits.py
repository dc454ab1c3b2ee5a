"""Key checks, admin keys and per-tenant rate limits, in process (no memory service)."""

from __future__ import annotations

import hmac

import pytest

from bionic_gateway import auth
from bionic_gateway.auth import TenantResolver
from bionic_gateway.errors import OpenAIError
from bionic_gateway.ratelimit import RateLimiter
from tests.gateway.test_gateway_app import gateway, settings
from tests.support.recording_upstream import RecordingUpstream

KEYS = {f"sk-tenant-{i:02d}-{'x' * 20}": f"tenant{i}" for i in range(12)}
TARGET = "sk-tenant-07-" + "x" * 20
ADMIN = "sk-tenant-03-" + "x" * 20
COMPARE = hmac.compare_digest


# --- key checks whose time does not depend on how much of a key matches ------------------


def _comparisons(
    monkeypatch: pytest.MonkeyPatch, resolver: TenantResolver, presented: str
) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return COMPARE(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    try:
        resolver.caller(f"Bearer {presented}")
    except OpenAIError as exc:
        assert exc.status == 401
    return calls


@pytest.mark.parametrize("admin_keys", [[], [ADMIN]])
def test_every_key_is_compared_whole_as_a_fixed_length_digest(
    monkeypatch: pytest.MonkeyPatch, admin_keys: list[str]
) -> None:
    """Whatever is presented — nothing alike, all but the last character, the key itself,
    something much longer — the same comparisons run: one compare_digest per configured
    key (and admin key), each of two 32-byte digests, never the raw key."""
    resolver = TenantResolver(KEYS, "salt", admin_keys)
    presented = ["", "sk-nothing-alike", TARGET[:-1] + "y", TARGET[:-1], TARGET, TARGET * 50]
    seen = [_comparisons(monkeypatch, resolver, p) for p in presented]
    for calls in seen:
        assert len(calls) == len(KEYS) + len(admin_keys)
        assert all(len(a) == len(b) == 32 for a, b in calls)
        assert not any(TARGET.encode() in a + b for a, b in calls)
    # The configured side is the same list in the same order every time.
    assert len({tuple(a for a, _ in calls) for calls in seen}) == 1
    assert [sum(COMPARE(a, b) for a, b in calls) for calls in seen] == [
        0, 0, 0, 0, 1, 0
    ]  # fmt: skip


def test_open_mode_compares_admin_keys_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = TenantResolver({}, "salt", [ADMIN, TARGET])
    for presented in ("sk-anyone", ADMIN[:-1], ADMIN):
        calls = _comparisons(monkeypatch, resolver, presented)
        assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)


def test_admin_keys_are_accepted_keys_marked_admin() -> None:
    resolver = TenantResolver(KEYS, "salt", [ADMIN])
    assert resolver.caller(f"Bearer {ADMIN}").admin
    assert resolver.caller(f"Bearer {ADMIN}").tenant == "tenant3"
    assert not resolver.caller(f"Bearer {TARGET}").admin
    with pytest.raises(ValueError, match="admin key"):
        TenantResolver(KEYS, "salt", ["sk-not-configured"])
    open_mode = TenantResolver({}, "salt", [ADMIN])
    assert open_mode.caller(f"Bearer {ADMIN}").admin
    assert not open_mode.caller("Bearer sk-anyone").admin


# --- per-tenant rate limits: a token bucket on a clock the test moves ----------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_refill_and_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(requests=2, period=1.0, burst=5, max_tenants=100, clock=clock)
    assert [limiter.acquire("a") for _ in range(6)] == [0, 0, 0, 0, 0, 1]
    assert limiter.acquire("b") == 0  # another tenant has its own bucket
    clock.now += 0.5  # one token back (2 a second)
    assert [limiter.acquire("a"), limiter.acquire("a")] == [0, 1]
    clock.now += 3600  # refills up to the burst, never beyond
    assert [limiter.acquire("a") for _ in range(6)] == [0, 0, 0, 0, 0, 1]

    per_minute = RateLimiter(requests=6, period=60.0, burst=1, max_tenants=100, clock=clock)
    assert [per_minute.acquire("a"), per_minute.acquire("a")] == [0, 10]  # Retry-After: 10 s
    clock.now += 9.9
    assert per_minute.acquire("a") == 1
    clock.now += 0.1
    assert per_minute.acquire("a") == 0


def test_the_limiter_keeps_a_bounded_number_of_tenants() -> None:
    clock = Clock()
    limiter = RateLimiter(requests=1, period=60.0, burst=1, max_tenants=50, clock=clock)
    for i in range(10_000):
        limiter.acquire(f"t{i}")
        assert len(limiter) <= 50
    # The most recently seen are kept (still empty); the oldest were dropped.
    assert limiter.acquire("t9999") > 0
    assert limiter.acquire("t0") == 0


def test_the_gateway_answers_429_with_retry_after_per_tenant(
    upstream: RecordingUpstream,
) -> None:
    s = settings(
        upstream,
        rate_limit_requests=3,
        rate_limit_period=60.0,
        rate_limit_burst=3,
        api_keys={"sk-a": "a", "sk-b": "b"},
    )
    with gateway(s) as c:

        def models(key: str) -> int:
            headers = {"authorization": f"Bearer {key}"}
            return c.get("/v1/models", headers=headers).status_code

        assert [models("sk-a") for _ in range(3)] == [200, 200, 200]
        limited = c.get("/v1/models", headers={"authorization": "Bearer sk-a"})
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "20"  # one token per 20 s
        error = limited.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert models("sk-b") == 200  # the other tenant is not affected
        assert c.get("/health").status_code == 200  # nor is liveness
        assert models("sk-wrong") == 401  # a bad key is refused before any bucket


def test_no_limit_by_default(upstream: RecordingUpstream) -> None:
    with gateway(settings(upstream)) as c:
        assert {c.get("/v1/models").status_code for _ in range(50)} == {200}
