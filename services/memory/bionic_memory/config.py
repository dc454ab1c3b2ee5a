"""Memory service settings, from BIONIC_MEMORY_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bionic_memory.decay import EBBINGHAUS_CURVE
from bionic_memory.store.edge import SEARCH_THREADS


class MemorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIONIC_MEMORY_")

    host: str = "127.0.0.1"
    port: int = 50052
    metrics_port: int = Field(9102, description="Prometheus /metrics port; 0 disables it")
    backend: Literal["edge", "qdrant"] = Field(
        "edge", description="edge: embedded engine on data_dir; qdrant: a Qdrant server"
    )
    data_dir: str = Field("./data/memory", description="Folder of the embedded (edge) store")
    qdrant_url: str = Field("http://127.0.0.1:6333", description="Qdrant server (qdrant backend)")
    qdrant_api_key: str | None = Field(None, description="Qdrant server API key, if it has one")
    qdrant_collection: str = Field("memories", description="Collection of the qdrant backend")
    dimension: int = Field(384, ge=1, description="Vector size; must match the embedder")

    # The bionic algorithm. `preset` fills every field below that is not set explicitly:
    # "default" is the measured default (docs/benchmarks.md), "original" the original
    # system's algorithm exactly (DESIGN.md section 2; PRESETS in presets.py).
    preset: Literal["default", "original"] = Field(
        "default", description="default: measured defaults; original: the original algorithm"
    )
    selection: Literal["relevance_first", "original"] = Field(
        "relevance_first",
        description="relevance_first: slots go by relevance (strength breaks near-ties); "
        "original: cluster suppression, then half by relevance and the rest by strength",
    )
    strength_weight: float = Field(
        0.0, ge=0, description="relevance_first: score bonus per ln(1 + current strength)"
    )
    lexical_weight: float = Field(
        0.5,
        ge=0,
        description="Long-term recall ranks by cosine + weight * BM25 / best BM25 "
        "(names and rare words match exactly); 0: cosine only",
    )
    forgetting_curve: Literal["multi_exponential", "power_law", "exponential", "none"] = Field(
        "multi_exponential",
        description="Long-term and archive cooling: a sum of exponentials or a power law "
        "fitted to the whole Ebbinghaus table, the original single exponential through the "
        "long-term curve point, or none",
    )
    curve_terms: int = Field(3, ge=1, le=4, description="Exponentials in the fitted curve")
    long_term_threshold: float = Field(
        0.07,
        gt=0,
        lt=1,
        description="Fitted curves: long-term strength under which a "
        "memory leaves long-term memory (exponential: long_term_retention)",
    )
    archive: bool = Field(
        True,
        description="Move forgotten long-term memories to a cold archive instead of "
        "deleting them; archived memories are recalled only on a strong cue",
    )
    archive_threshold: float = Field(
        0.01, gt=0, lt=1, description="Strength under which an archived memory is deleted"
    )
    archive_min_score: float = Field(
        0.5, ge=-1, le=1, description="Cosine an archived memory needs to be recalled"
    )
    salience_gain: float = Field(
        1.0, ge=0, description="A new memory starts at 1 + gain * salience of its text (0..1)"
    )
    recall_limit: int = Field(7, ge=1, le=100, description="Memories recalled per turn")
    max_recall_limit: int = Field(100, ge=1, description="Largest limit a request may ask")
    retrieval_multiplier: int = Field(
        2, ge=1, description="Long-term hits per recalled memory (reinforced and promoted)"
    )
    cluster_multiplier: int = Field(
        3, ge=1, description="Short-term candidates per recalled memory, before suppression"
    )
    reinforcement_temperature: float = Field(
        0.05, gt=0, description="Softmax temperature of the reinforcement shares"
    )
    reinforcement_gain: float = Field(
        0.25, ge=0, description="Strength a recall hands out in all (its softmax shares' sum)"
    )
    long_term_delay: float = Field(
        EBBINGHAUS_CURVE[-1][0], gt=0, description="Long-term curve point: delay (seconds)"
    )
    long_term_retention: float = Field(
        EBBINGHAUS_CURVE[-1][1], gt=0, lt=1, description="Long-term retention and threshold"
    )
    short_term_delay: float = Field(
        EBBINGHAUS_CURVE[0][0], gt=0, description="Short-term curve point: delay (seconds)"
    )
    short_term_retention: float = Field(
        EBBINGHAUS_CURVE[0][1], gt=0, lt=1, description="Short-term retention and threshold"
    )
    duplicate_similarity: float = Field(
        0.95, gt=0, le=1, description="ScanForSuppression's default near-duplicate cosine"
    )
    max_scan_memories: int = Field(2000, ge=2, description="ScanForSuppression's default scan")

    # Bounds on input.
    max_text_chars: int = Field(100_000, ge=1, description="Longest memory text")
    max_metadata_bytes: int = Field(65_536, ge=2, description="Largest metadata, as JSON")
    max_page_size: int = Field(500, ge=1, description="Largest List page")
    max_concurrent_rpcs: int = Field(256, ge=1)
    store_threads: int = Field(8, ge=1, description="Threads doing blocking store work")
    search_threads: int = Field(
        SEARCH_THREADS,
        ge=0,
        description="edge: threads reading the store's segments in parallel; 0 = one per CPU",
    )
    grace_seconds: float = 5.0
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _apply_preset(self) -> MemorySettings:
        from bionic_memory.presets import PRESETS

        for name, value in PRESETS[self.preset].items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)
        return self
