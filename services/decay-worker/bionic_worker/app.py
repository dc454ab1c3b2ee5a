"""The Celery app of the decay worker: thin named tasks over `logic`."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
from celery import Celery, Task

from bionic_common.clients import EmbedderClient, MemoryClient, is_unavailable
from bionic_common.memory_types import Memory
from bionic_common.tasks import REMEMBER_EXCHANGE, ExchangeMessage
from bionic_worker import logic
from bionic_worker.config import WorkerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class ThreadServices(threading.local):
    """Each task thread keeps its own event loop and gRPC channels."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.services: logic.Services | None = None

    def run(self, make: Any) -> Any:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        if self.services is None:
            self.services = self.loop.run_until_complete(self._connect())
        coro: Awaitable[Any] = make(self.services)
        return self.loop.run_until_complete(coro)

    async def _connect(self) -> logic.Services:
        return logic.Services(
            embedder=EmbedderClient(self.settings.embedder_target),
            memory=MemoryClient(self.settings.memory_target),
            timeout=self.settings.rpc_timeout,
        )


def create_app(settings: WorkerSettings) -> Celery:
    app = Celery("bionic_worker", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,  # a task is acknowledged only once it finished
        task_reject_on_worker_lost=True,  # a killed worker's task goes back to the queue
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_soft_time_limit=settings.soft_time_limit,
        task_time_limit=settings.time_limit,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    services = ThreadServices(settings)

    def backoff(retries: int) -> float:
        return float(min(2.0**retries, settings.retry_backoff_max))

    @app.task(  # type: ignore[untyped-decorator]
        name=REMEMBER_EXCHANGE, bind=True, max_retries=settings.max_retries
    )
    def remember_exchange(self: Task, message: ExchangeMessage) -> str:
        try:
            memory: Memory = services.run(lambda s: logic.remember_exchange(s, message))
        except grpc.aio.AioRpcError as exc:
            if not is_unavailable(exc):
                raise
            log.warning("memory or embedder unavailable (%s); retrying", exc.code().name)
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        return memory.id

    return app
