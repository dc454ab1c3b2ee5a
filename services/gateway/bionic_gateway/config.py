"""Gateway settings, from BIONIC_GATEWAY_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIONIC_GATEWAY_")

    host: str = "127.0.0.1"
    port: int = 8000
    upstream_base_url: str = Field(
        "http://127.0.0.1:8080/v1", description="Any OpenAI-compatible API, up to /v1"
    )
    upstream_api_key: str | None = Field(None, description="Key the gateway sends upstream")
    upstream_key_passthrough: bool = Field(
        False,
        description="Send each client's own bearer key upstream instead of upstream_api_key",
    )
    upstream_timeout: float = Field(
        120.0, gt=0, description="Seconds to wait for the upstream (each read); then 504"
    )
    upstream_keepalive_expiry: float = Field(
        2.0,
        ge=0,
        description="Seconds an idle upstream connection is kept; below the upstream's own "
        "keep-alive (uvicorn 5 s, nginx 75 s), so the gateway drops it first",
    )
    models: list[str] = Field(
        default_factory=lambda: ["bionic"],
        description="Model ids /v1/models lists when the upstream cannot be asked",
    )
    embedder_target: str = Field(
        "127.0.0.1:50051", description="gRPC target of the embedders (comma list with ipv4:)"
    )
    memory_target: str = "127.0.0.1:50052"
    broker_url: str = Field(
        "sqla+sqlite:///data/broker.sqlite", description="Where replies are queued for the worker"
    )
    max_pending_tasks: int = Field(
        1024, ge=1, description="Tasks waiting to be spooled before new ones are dropped"
    )
    spool_file: str | None = Field(
        None,
        description="SQLite file where tasks wait for the broker (kept across restarts); "
        "unset = in memory (a restart during a broker outage loses what waits)",
    )
    spool_max_tasks: int = Field(
        100_000, ge=1, description="Tasks the spool holds; past that new ones are dropped"
    )
    spool_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Bytes of tasks the spool holds; then dropped"
    )
    memory_deadline: float = Field(
        0.3, gt=0, description="Seconds embed + recall may take before chat goes on without memory"
    )
    memory_timeout: float = Field(
        10.0, gt=0, description="Seconds a /v1/memories call may wait for embedder and memory"
    )
    recall_limit: int = Field(0, ge=0, description="Memories per turn; 0 = the memory service's")
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description='Accepted keys and their tenants, as JSON {"key": "tenant"}; empty = open',
    )
    api_keys_file: str | None = Field(
        None, description='A JSON file {"key": "tenant"}, merged with api_keys'
    )
    tenant_salt: str | None = Field(None, description="Salt of tenant ids in open mode")
    tenant_salt_file: str = Field(
        "./data/tenant_salt", description="Where a generated salt is kept when none is set"
    )
    prompt_language: Literal["en", "zh"] = Field(
        "en", description="Language of the default memory system prompt"
    )
    prompt_template: str | None = Field(
        None, description="Memory system prompt; must contain {memories}. Overrides the default"
    )
    prompt_template_file: str | None = Field(
        None, description="A file holding the memory system prompt (see prompt_template)"
    )
    history_messages: int = Field(
        0,
        ge=0,
        description="With recalled memories, send only the last N client messages besides "
        "the system ones (never without the latest user message, never a tool result "
        "without its call); 0 = the whole conversation",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description='Origins allowed by CORS, JSON list; ["*"] = any'
    )
    admin_keys: list[str] = Field(
        default_factory=list,
        description="Keys that may also do admin operations (import, server-wide stats), JSON "
        "list; each must be an accepted key (of api_keys when keys are configured)",
    )
    rate_limit_requests: int = Field(
        0, ge=0, description="Requests a tenant may make per rate_limit_period; 0 = no limit"
    )
    rate_limit_period: float = Field(
        1.0, gt=0, description="Seconds of rate_limit_requests: 1 per second, 60 per minute"
    )
    rate_limit_burst: int | None = Field(
        None, ge=1, description="Requests a tenant may make at once; default rate_limit_requests"
    )
    rate_limit_tenants: int = Field(
        10_000, ge=1, description="Tenants whose rate is tracked; the least recent is dropped"
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest request body")
    log_level: str = "INFO"
