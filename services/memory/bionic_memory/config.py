"""Memory service settings, from BIONIC_MEMORY_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bionic_memory.decay import EBBINGHAUS_CURVE


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

    # The bionic algorithm; defaults are the original system's.
    recall_limit: int = Field(7, ge=1, le=100, description="Memories recalled per turn")
    max_recall_limit: int = Field(100, ge=1, description="Largest limit a request may ask")
    retrieval_multiplier: int = Field(
        2, ge=1, description="Long-term hits per recalled memory (reinforced and promoted)"
    )
    cluster_multiplier: int = Field(
        3, ge=1, description="Short-term candidates per recalled memory, before suppression"
    )
    reinforcement_temperature: float = Field(
        1.0, gt=0, description="Softmax temperature of the reinforcement shares"
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
    grace_seconds: float = 5.0
    log_level: str = "INFO"
