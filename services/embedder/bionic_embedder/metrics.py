"""Prometheus metrics of the embedder."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)


class EmbedderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_depth = Gauge(
            "bionic_embedder_queue_depth", "Texts waiting for a batch", registry=registry
        )
        self.batch_size = Histogram(
            "bionic_embedder_batch_size",
            "Texts per forward pass",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "bionic_embedder_queue_seconds",
            "Time a text waited for its batch",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "bionic_embedder_inference_seconds",
            "Time of one forward pass",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.texts = Counter("bionic_embedder_texts", "Texts embedded", registry=registry)
        self.tokens = Counter("bionic_embedder_tokens", "Tokens embedded", registry=registry)
        self.rejected = Counter(
            "bionic_embedder_rejected", "Requests refused", ["reason"], registry=registry
        )
