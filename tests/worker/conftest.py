"""A launcher-started system per broker (SQLite, Redis) with the real SmolLM2 upstream,
its worker tuned for tests: short visibility timeout, RPC deadlines and backoff."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import redis
from celery import Celery

from bionic_common.clients import EmbedderClient, MemoryClient
from bionic_common.memory_types import Memory, Scope
from bionic_launcher.stack import Stack
from bionic_worker import logic
from bionic_worker.summary import Summarizer, SummaryOptions
from tests.memory.conftest import docker_engine_error
from tests.support.ports import free_port
from tests.support.stack import redis_server, stack_settings, wait_for

T = TypeVar("T")

# SmolLM2 on two busy shared cores has taken 30 s for a summary.
WORKER_ENV = {
    "BIONIC_WORKER_VISIBILITY_TIMEOUT": "75",
    "BIONIC_WORKER_SOFT_TIME_LIMIT": "65",
    "BIONIC_WORKER_TIME_LIMIT": "70",
    "BIONIC_WORKER_SUPPRESS_SOFT_TIME_LIMIT": "8",
    "BIONIC_WORKER_SUPPRESS_TIME_LIMIT": "10",
    "BIONIC_WORKER_RPC_TIMEOUT": "2",
    "BIONIC_WORKER_RETRY_BACKOFF_MAX": "2",
    "BIONIC_WORKER_OUTAGE_PAUSE": "0.5",
    "BIONIC_WORKER_MAX_RETRIES": "100",
    "BIONIC_WORKER_SUMMARY_TIMEOUT": "60",
}
# For the redelivery test: a short visibility timeout (so short limits to fit under it).
QUICK_REDELIVERY = {
    "BIONIC_WORKER_VISIBILITY_TIMEOUT": "12",
    "BIONIC_WORKER_SOFT_TIME_LIMIT": "8",
    "BIONIC_WORKER_TIME_LIMIT": "10",
    "BIONIC_WORKER_SUMMARY_TIMEOUT": "6",
}


@dataclasses.dataclass
class WorkerStack:
    stack: Stack
    broker_url: str
    metrics_port: int

    @property
    def memory_target(self) -> str:
        s = self.stack.settings
        return f"{s.host}:{s.memory_port}"

    @property
    def embedder_target(self) -> str:
        s = self.stack.settings
        return f"{s.host}:{s.embedder_port}"

    @property
    def upstream(self) -> str:
        s = self.stack.settings
        return f"http://{s.host}:{s.llm_port}/v1"

    def restart(self, name: str, **env: str) -> None:
        """Restart `worker` or `beat` with extra settings (kept for later restarts)."""
        self.stack.stop_service(name)
        spec = self.stack.specs[name]
        self.stack.specs[name] = dataclasses.replace(spec, env={**spec.env, **env})
        self.stack.start_service(name)
        if name == "worker":
            wait_for(self.serving_metrics, timeout=30)

    def serving_metrics(self) -> bool:
        try:
            scrape(self)
        except httpx.TransportError:
            return False
        return True

    def producer(self) -> Celery:
        """A task producer on the stack's broker, as the gateway's."""
        app = Celery("test-producer", broker=self.broker_url)
        app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
        return app


@pytest.fixture(scope="session")
def broker_redis() -> Iterator[str]:
    """Redis for the worker's broker: a testcontainers Redis where a Docker engine runs,
    else the machine's own server or one started here, in a database of its own (no
    other suite's worker may take these tasks)."""
    if docker_engine_error() is None:
        from testcontainers.community.redis import RedisContainer

        with RedisContainer() as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    with redis_server() as url:
        broker = re.sub(r"/\d+$", "/14", url)
        redis.Redis.from_url(broker).flushdb()
        yield broker


@pytest.fixture(scope="session", params=["sqlite", "redis"])
def worker_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerStack]:
    data = tmp_path_factory.mktemp(f"worker-{request.param}")
    if request.param == "redis":
        broker = request.getfixturevalue("broker_redis")
    else:
        broker = f"sqla+sqlite:///{Path(data, 'broker.sqlite')}"
    settings = stack_settings(data, upstream_base_url=None, broker_url=broker)
    stack = Stack(settings)
    metrics_port = free_port()
    for name in ("worker", "beat"):
        spec = stack.specs[name]
        stack.specs[name] = dataclasses.replace(spec, env={**spec.env, **WORKER_ENV})
    # The original algorithm: single-exponential cooling with the closed-form expiries
    # the forgetting tests compute, and forgetting deletes (no archive).
    memory = stack.specs["memory"]
    stack.specs["memory"] = dataclasses.replace(
        memory, env={**memory.env, "BIONIC_MEMORY_PRESET": "original"}
    )
    worker = stack.specs["worker"]
    stack.specs["worker"] = dataclasses.replace(
        worker, env={**worker.env, "BIONIC_WORKER_METRICS_PORT": str(metrics_port)}
    )
    try:
        stack.start()
        ws = WorkerStack(stack, broker, metrics_port)
        wait_for(ws.serving_metrics, timeout=30)
        yield ws
    finally:
        stack.stop()


def new_scope(name: str) -> Scope:
    return Scope(tenant=f"t-{name}-{uuid.uuid4().hex[:8]}", user="u1")


def with_memory(target: str, use: Callable[[MemoryClient], Awaitable[T]]) -> T:
    """Run `use(client)` against the memory service, from synchronous test code."""

    async def run() -> T:
        client = MemoryClient(target)
        try:
            return await use(client)
        finally:
            await client.close()

    return asyncio.run(run())


def memories_of(ws: WorkerStack, scope: Scope) -> list[Memory]:
    async def read(client: MemoryClient) -> list[Memory]:
        found: list[Memory] = []
        token = ""
        while True:
            page, token = await client.list_page(scope, page_size=200, page_token=token, timeout=5)
            found.extend(page)
            if not token:
                return found

    return with_memory(ws.memory_target, read)


def run_logic(
    ws: WorkerStack, use: Callable[[logic.Services], Awaitable[T]], upstream: str | None = None
) -> T:
    """Run a logic function directly (no broker, no worker) against the stack's services."""

    async def run() -> T:
        services = logic.Services(
            embedder=EmbedderClient(ws.embedder_target),
            memory=MemoryClient(ws.memory_target),
            summarizer=Summarizer(upstream or ws.upstream, SUMMARY_OPTIONS),
            timeout=10,
        )
        try:
            return await use(services)
        finally:
            await services.close()

    return asyncio.run(run())


SUMMARY_OPTIONS = SummaryOptions(max_chars=300, max_tokens=96, temperature=0.1, timeout=60)


def tasks_done(ws: WorkerStack, task: str, outcome: str = "success") -> float:
    return metric(ws, "bionic_worker_tasks_total", task=task, outcome=outcome)


def scrape(ws: WorkerStack) -> str:
    return httpx.get(f"http://127.0.0.1:{ws.metrics_port}/metrics", timeout=5).text


def metric(ws: WorkerStack, name: str, **labels: str) -> float:
    """The value of one sample of the worker's /metrics (0 when absent)."""
    text = scrape(ws)
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0
