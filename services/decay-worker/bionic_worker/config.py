"""Decay worker and beat settings, from BIONIC_WORKER_* environment variables."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIONIC_WORKER_")

    broker_url: str = Field(
        "sqla+sqlite:///data/broker.sqlite",
        description="redis://host:6379/0, or kombu's SQLAlchemy transport on SQLite",
    )
    visibility_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds after which a task taken by a worker that died unacknowledged is "
        "delivered again (Redis and SQLite alike); must exceed the time limits and "
        "retry_backoff_max",
    )
    embedder_target: str = "127.0.0.1:50051"
    memory_target: str = "127.0.0.1:50052"
    rpc_timeout: float = Field(10.0, gt=0, description="Seconds per gRPC call")
    concurrency: int = Field(4, ge=1, description="Task threads")
    max_retries: int = Field(30, ge=0, description="Retries of a task whose service is down")
    retry_backoff_max: float = Field(60.0, gt=0, description="Longest wait between retries")
    outage_pause: float = Field(
        2.0,
        ge=0,
        description="After a task found a service down, the others retry without calling "
        "it for this long (each would otherwise wait rpc_timeout)",
    )
    soft_time_limit: float = Field(60.0, gt=0, description="Seconds before a task is told to stop")
    time_limit: float = Field(90.0, gt=0, description="Seconds before a task is killed")
    suppress_soft_time_limit: float = Field(
        240.0, gt=0, description="Seconds before one user's cluster suppression is stopped"
    )
    suppress_time_limit: float = Field(
        300.0, gt=0, description="Seconds before one user's cluster suppression is killed"
    )
    # --- summaries ----------------------------------------------------------------------
    upstream_base_url: str = Field(
        "http://127.0.0.1:8080/v1", description="OpenAI-compatible API that writes summaries"
    )
    upstream_api_key: str | None = None
    summary_model: str | None = Field(
        None, description="Model for summaries; unset: the first one the upstream lists"
    )
    summary_threshold: int = Field(
        500, ge=1, description="Memories longer than this many characters get a summary"
    )
    summary_max_chars: int = Field(300, ge=20, description="Longest summary accepted")
    summary_max_tokens: int = Field(
        96, ge=8, description="Token budget of the LLM's summary (bounds its cost)"
    )
    summary_temperature: float = Field(0.1, ge=0, le=2)
    summary_timeout: float = Field(
        30.0, gt=0, description="Seconds the LLM may take before the fallback cut is stored"
    )
    # --- beat ---------------------------------------------------------------------------
    prune_short_term_every: float = Field(600.0, gt=0, description="Seconds between STM prunes")
    prune_long_term_every: float = Field(3600.0, gt=0, description="Seconds between LTM prunes")
    suppress_cron: str = Field(
        "0 3 * * *", description="When cluster suppression runs (minute hour dom month dow)"
    )
    suppress_similarity: float = Field(
        0.0, ge=0, le=1, description="Cosine at which memories are near-duplicates; 0: server's"
    )
    suppress_max_memories: int = Field(
        0, ge=0, description="Newest memories scanned per user; 0: the server's default"
    )
    beat_schedule_file: str = Field(
        "data/beat-schedule", description="Where beat keeps when each entry last ran"
    )
    # --- process ------------------------------------------------------------------------
    metrics_port: int = Field(9103, description="Prometheus /metrics port; 0 disables it")
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _limits_fit(self) -> WorkerSettings:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError("soft_time_limit must be below time_limit")
        if self.suppress_soft_time_limit >= self.suppress_time_limit:
            raise ValueError("suppress_soft_time_limit must be below suppress_time_limit")
        if len(self.suppress_cron.split()) != 5:
            raise ValueError("suppress_cron needs five fields: minute hour dom month dow")
        if self.summary_timeout >= self.soft_time_limit:
            raise ValueError("summary_timeout must be below soft_time_limit")
        longest = max(self.time_limit, self.suppress_time_limit, self.retry_backoff_max)
        if self.visibility_timeout <= longest:
            raise ValueError(
                "visibility_timeout must exceed the time limits and retry_backoff_max, "
                "or a running task is delivered a second time"
            )
        return self
