"""Prometheus metrics of the embedder."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from bionic_embedder.model import EmbeddingModel

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
        self.padded_tokens = Counter(
            "bionic_embedder_padded_tokens",
            "Token positions computed, padding included (divided by tokens: the padding cost)",
            registry=registry,
        )
        self.rejected = Counter(
            "bionic_embedder_rejected", "Requests refused", ["reason"], registry=registry
        )
        self.model = Info(
            "bionic_embedder_model", "The model this replica serves", registry=registry
        )
        self.cpu_feature = Gauge(
            "bionic_embedder_cpu_feature",
            "CPU features detected at start (1 = present and used)",
            ["feature"],
            registry=registry,
        )
        self.quality_min_cosine = Gauge(
            "bionic_embedder_quality_min_cosine",
            "Quality gate: lowest cosine of the served precision's vectors to fp32",
            registry=registry,
        )

    def describe(self, model: EmbeddingModel) -> None:
        self.model.info(
            {
                "model": model.model_id,
                "dimension": str(model.dimension),
                "pooling": model.pooling,
                "precision": model.precision,
                "device": model.device,
            }
        )
        for feature in model.cpu_features:
            self.cpu_feature.labels(feature).set(1)
        self.quality_min_cosine.set(model.quality_min_cosine)
