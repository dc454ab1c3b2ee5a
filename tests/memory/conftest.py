"""Every backend the memory service runs on, for one congruence suite.

`edge` is the embedded Qdrant engine on a folder; `qdrant-local` is qdrant-client's own
local mode standing in for a server; `qdrant-server` is a real Qdrant server started with
testcontainers, skipped (saying so) where no Docker engine runs.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from bionic_memory.store.base import MemoryStore
from bionic_memory.store.edge import EdgeStore
from bionic_memory.store.qdrant import QdrantStore

DIM = 8
BACKENDS = ["edge", "qdrant-local", "qdrant-server"]


def docker_engine_error() -> str | None:
    """Why no container can be started here, or None when a Docker engine answers."""
    import docker
    from docker.errors import DockerException

    try:
        docker.from_env().ping()
    except DockerException as exc:
        return f"no Docker engine to start a Qdrant server in ({type(exc).__name__})"
    return None


@pytest.fixture(scope="session")
def qdrant_server() -> Iterator[QdrantClient]:
    reason = docker_engine_error()
    if reason:
        pytest.skip(reason)
    from testcontainers.community.qdrant import QdrantContainer

    with QdrantContainer() as container:
        yield container.get_client()


def open_store(backend: str, path: Path, request: pytest.FixtureRequest) -> MemoryStore:
    if backend == "edge":
        return EdgeStore(str(path), DIM)
    if backend == "qdrant-local":
        with warnings.catch_warnings():  # local mode ignores payload indexes, and says so
            warnings.simplefilter("ignore", UserWarning)
            return QdrantStore(QdrantClient(location=":memory:"), "memories", DIM)
    client = request.getfixturevalue("qdrant_server")
    return QdrantStore(client, f"memories-{uuid.uuid4().hex[:8]}", DIM)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore]:
    s = open_store(request.param, tmp_path, request)
    yield s
    if request.param != "qdrant-server":
        s.close()
