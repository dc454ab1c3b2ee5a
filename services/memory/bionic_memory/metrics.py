"""Prometheus metrics of the memory service (names are a contract for dashboards)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bionic_memory.service import MemoryService

SECONDS_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30,
)  # fmt: skip


class MemoryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rpc_seconds = Histogram(
            "bionic_memory_rpc_seconds",
            "Time of the store work of an RPC (a streaming RPC: per page or batch), by method",
            ["method"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.rpc_refused = Counter(
            "bionic_memory_rpc_refused",
            "RPCs answered with an error, by method and gRPC status",
            ["method", "code"],
            registry=registry,
        )
        self.forgotten = Counter(
            "bionic_memory_forgotten",
            "Memories Prune forgot (deleted) or archived, by tier and outcome",
            ["tier", "outcome"],
            registry=registry,
        )


class TierSizes(Collector):
    """Memories held per tier over every tenant, counted on the indexes at scrape time."""

    def __init__(self, service: MemoryService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "bionic_memory_memories", "Memories held, by tier (all tenants)", labels=["tier"]
        )
        for tier, count in self._service.tier_sizes().items():
            family.add_metric([tier.value], count)
        yield family
