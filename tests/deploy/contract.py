"""What compose must run, derived from the launcher: the one source of each service's
command and environment.

The launcher's `plan()` is rendered for the compose network (every service binds 0.0.0.0
on its default port, talks to the others by service name, queues on Redis, keeps data in
/data) and its loopback addresses are mapped to compose's service names. Compose may add
settings the launcher leaves at their defaults, but only ones the service really reads.

`python -m tests.deploy.contract` prints the blocks to paste into docker-compose.yml.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from bionic_embedder.config import EmbedderSettings
from bionic_gateway.config import GatewaySettings
from bionic_launcher.config import LauncherSettings
from bionic_launcher.services import plan, smollm2_path
from bionic_memory.config import MemorySettings
from bionic_worker.config import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# The launcher's service names and compose's.
COMPOSE_NAMES = {
    "llm": "llm",
    "embedder": "embedder",
    "memory": "memory",
    "worker": "decay-worker",
    "beat": "decay-beat",
    "gateway": "gateway",
}
SETTINGS: list[type[BaseSettings]] = [
    GatewaySettings,
    EmbedderSettings,
    MemorySettings,
    WorkerSettings,
]
# The launcher's plan on the compose network: default ports, Redis, /data in the image.
COMPOSE_LAUNCHER = LauncherSettings(
    data_dir="/data",
    host="0.0.0.0",
    gateway_port=8000,
    memory_port=50052,
    embedder_port=50051,
    embedder_replicas=1,
    llm_port=8080,
    metrics_port=9100,
    upstream_base_url=None,  # the zero-configuration default: the bundled SmolLM2
    upstream_api_key=None,
    broker_url="redis://redis:6379/0",
    log_level="${BIONIC_LOG_LEVEL:-INFO}",
)
IMAGE_PYTHON = "python"
IMAGE_SMOLLM2 = "/opt/venv/smollm2.gguf"  # the llm image's link to the bundled model
# Loopback addresses of the launcher's plan -> compose's service names.
ADDRESSES = {
    "ipv4:0.0.0.0:50051": "dns:///embedder:50051",  # every replica, balanced round robin
    "0.0.0.0:50052": "memory:50052",
    "http://0.0.0.0:8080/v1": "${BIONIC_UPSTREAM_BASE_URL:-http://llm:8080/v1}",
}
# Variables compose sets differently from the launcher, and why.
OVERRIDES = {
    ("embedder", "HF_HUB_OFFLINE"): "compose downloads the hub model into its cache volume",
}
# Variables compose adds that no BIONIC settings class reads.
FOREIGN = {"HF_HOME"}


@dataclass(frozen=True)
class Expected:
    command: list[str]
    environment: dict[str, str]


def expected_services() -> dict[str, Expected]:
    """Compose service name -> the command and environment the launcher gives it."""
    argv_map = {sys.executable: IMAGE_PYTHON, smollm2_path(): IMAGE_SMOLLM2}
    out: dict[str, Expected] = {}
    for spec in plan(COMPOSE_LAUNCHER):
        name = COMPOSE_NAMES.get(spec.name)
        if name is None:
            raise KeyError(f"the launcher runs {spec.name!r}, which compose does not know")
        out[name] = Expected(
            command=[argv_map.get(a, ADDRESSES.get(a, a)) for a in spec.argv],
            environment={k: ADDRESSES.get(v, v) for k, v in spec.env.items()},
        )
    return out


def settings_variables() -> dict[str, set[str]]:
    """Env prefix -> every variable its settings class reads."""
    return {
        cls.model_config["env_prefix"]: {
            f"{cls.model_config['env_prefix']}{field}".upper() for field in cls.model_fields
        }
        for cls in SETTINGS
    }


def load_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def main() -> None:
    blocks = {
        name: {"command": e.command, "environment": e.environment}
        for name, e in expected_services().items()
    }
    sys.stdout.write(yaml.safe_dump(blocks, sort_keys=False, width=100))


if __name__ == "__main__":
    main()
