"""Prometheus metrics of the gateway (names are a contract: dashboards and alerts use them).

The children a chat turn touches are bound once here: `labels()` takes a lock and builds
a key on every call, several times per turn otherwise.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGES = ("embed", "recall", "upstream_first_byte", "total")
TURN_OUTCOMES = ("on", "read_only", "off", "degraded")
TOKEN_KINDS = ("prompt", "completion")
# A client may send any token as a method: others count as one, so that requests cannot
# grow the metrics without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

SECONDS_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30, 60, 120,
)  # fmt: skip


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "bionic_gateway_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.turns = Counter(
            "bionic_gateway_chat_turns",
            "Chat completion turns by memory outcome (on, read_only, off, degraded) and mode",
            ["memory", "stream"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "bionic_gateway_stage_seconds",
            "Time of a chat turn's stages: embed, recall, upstream_first_byte, total",
            ["stage"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.degraded = Counter(
            "bionic_gateway_memory_degraded",
            "Chat turns answered without memory, by reason (timeout or a gRPC status)",
            ["reason"],
            registry=registry,
        )
        self.late_recalls = Counter(
            "bionic_gateway_late_recalls",
            "Storing Recalls that outlived the memory deadline, by how they ended: stored (the "
            "turn's message is in memory after all) or failed (it is queued for the worker)",
            ["outcome"],
            registry=registry,
        )
        self.queued = Counter(
            "bionic_gateway_tasks_queued",
            "Tasks handed to the worker, by task and outcome: queued (published), failed (a "
            "publish the broker refused; the task stays spooled), dropped (spool full)",
            ["task", "outcome"],
            registry=registry,
        )
        self.spooled = Gauge(
            "bionic_gateway_spooled_tasks",
            "Tasks in the spool not yet published (more than a few: the broker is unreachable)",
            registry=registry,
        )
        self.tokens = Counter(
            "bionic_gateway_tokens",
            "Tokens the upstream reported in usage, by kind (prompt, completion)",
            ["kind"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "bionic_gateway_upstream_errors",
            "Chat turns the upstream answered with an error, by status",
            ["status"],
            registry=registry,
        )
        self.stage = {name: self.stage_seconds.labels(name) for name in STAGES}
        self.token_kinds = {kind: self.tokens.labels(kind) for kind in TOKEN_KINDS}
        self._turns = {
            (outcome, stream): self.turns.labels(outcome, str(stream).lower())
            for outcome in TURN_OUTCOMES
            for stream in (False, True)
        }
        # (method, route template, status): finite sets, so this stays small (see METHODS)
        self._requests: dict[tuple[str, str, int], Counter] = {}

    def turn(self, outcome: str, stream: bool) -> None:
        self._turns[(outcome, stream)].inc()

    def request(self, method: str, route: str, status: int) -> None:
        method = method if method in METHODS else "OTHER"
        key = (method, route, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(method, route, str(status))
        child.inc()
