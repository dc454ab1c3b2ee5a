"""Memory service settings, from BIONIC_MEMORY_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MemorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIONIC_MEMORY_")

    host: str = "127.0.0.1"
    port: int = 50052
    metrics_port: int = Field(9102, description="Prometheus /metrics port; 0 disables it")
    backend: Literal["edge"] = "edge"
    data_dir: str = Field("./data/memory", description="Folder of the embedded (edge) store")
    dimension: int = Field(384, ge=1, description="Vector size; must match the embedder")
    recall_limit: int = Field(7, ge=1, le=100, description="Memories recalled per turn")
    max_recall_limit: int = Field(100, ge=1)
    max_text_chars: int = Field(100_000, ge=1)
    max_page_size: int = Field(500, ge=1)
    max_concurrent_rpcs: int = Field(256, ge=1)
    grace_seconds: float = 5.0
    log_level: str = "INFO"
