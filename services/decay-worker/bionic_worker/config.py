"""Decay worker settings, from BIONIC_WORKER_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIONIC_WORKER_")

    broker_url: str = Field(
        "sqla+sqlite:///data/broker.sqlite",
        description="redis://host:6379/0, or kombu's SQLAlchemy transport on SQLite",
    )
    embedder_target: str = "127.0.0.1:50051"
    memory_target: str = "127.0.0.1:50052"
    rpc_timeout: float = Field(10.0, gt=0, description="Seconds per gRPC call")
    concurrency: int = Field(4, ge=1, description="Task threads")
    max_retries: int = Field(30, ge=0, description="Retries of a task whose service is down")
    retry_backoff_max: float = Field(60.0, gt=0, description="Longest wait between retries")
    soft_time_limit: float = Field(60.0, gt=0)
    time_limit: float = Field(90.0, gt=0)
    metrics_port: int = Field(9103, description="Prometheus /metrics port; 0 disables it")
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
