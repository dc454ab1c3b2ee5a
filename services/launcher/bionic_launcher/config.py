"""Launcher settings, from BIONIC_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LauncherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIONIC_")

    data_dir: str = Field("./data", description="Memories, broker queue, salt and logs")
    host: str = "127.0.0.1"
    gateway_port: int = 8000
    memory_port: int = 50052
    embedder_port: int = Field(50061, description="First embedder replica; the next use +1, +2…")
    embedder_replicas: int = Field(1, ge=1, le=16)
    llm_port: int = 8080
    metrics_port: int = Field(9100, description="Base of the services' /metrics ports")
    upstream_base_url: str | None = Field(
        None, description="An OpenAI-compatible API; unset = start the bundled SmolLM2"
    )
    upstream_api_key: str | None = None
    broker_url: str | None = Field(None, description="Unset = SQLite in the data folder")
    startup_timeout: float = Field(180.0, gt=0)
    stop_timeout: float = Field(15.0, gt=0, description="SIGTERM to SIGKILL, per service")
    background_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness of the decay worker and beat: their work after a turn (the "
        "reply's store) gives the CPU to the next turn; 0 = the same as the other services",
    )
    log_level: str = "INFO"
