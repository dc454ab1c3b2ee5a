"""Hands work to the decay worker through the broker: replies to store, and user turns
whose store was missed while memory was unavailable."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from bionic_common.memory_types import Scope
from bionic_common.tasks import (
    REMEMBER_EXCHANGE,
    REMEMBER_USER_TURN,
    ExchangeMessage,
    UserTurnMessage,
)
from bionic_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

# Publishing blocks a thread; bounded so a dead broker cannot pile up blocked threads.
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}
PUBLISH_THREADS = 2


class TaskQueue:
    """Publishes on its own threads: a call returns at once, so a response (and the next
    request on its connection) never waits for the broker. At most `max_pending` messages
    wait to be published; past that a message is dropped, logged and counted."""

    def __init__(self, broker_url: str, metrics: GatewayMetrics, max_pending: int) -> None:
        self._app = Celery("bionic_gateway", broker=broker_url)
        self._app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="publish")
        self._slots = threading.BoundedSemaphore(max_pending)

    def remember_exchange(self, scope: Scope, reply: str, request_id: str) -> None:
        """Queue an assistant reply for storage."""
        message = ExchangeMessage(
            tenant=scope.tenant,
            user=scope.user,
            reply=reply,
            request_id=request_id,
            metadata={"request_id": request_id},
        )
        self._submit(REMEMBER_EXCHANGE, message, request_id)

    def remember_turn(self, scope: Scope, text: str, request_id: str, at: float) -> None:
        """Queue a user message whose store was missed because memory was unavailable."""
        message = UserTurnMessage(
            tenant=scope.tenant,
            user=scope.user,
            text=text,
            request_id=request_id,
            metadata={"request_id": request_id, "said_at": at, "queued": "memory_degraded"},
        )
        self._submit(REMEMBER_USER_TURN, message, request_id)

    def _submit(self, task: str, message: Any, request_id: str) -> None:
        if not self._slots.acquire(blocking=False):
            log.error("publish backlog full: dropped %s of request %s", task, request_id)
            self._metrics.queued.labels(task, "dropped").inc()
            return
        self._executor.submit(self._publish, task, message, request_id)

    def _publish(self, task: str, message: Any, request_id: str) -> None:
        try:
            self._app.send_task(task, args=[message], retry=True, retry_policy=PUBLISH_RETRY)
        except OperationalError:
            log.exception("could not queue %s for request %s", task, request_id)
            self._metrics.queued.labels(task, "failed").inc()
        else:
            self._metrics.queued.labels(task, "queued").inc()
        finally:
            self._slots.release()

    def close(self) -> None:
        """Publish what is pending, then let the broker connection go."""
        self._executor.shutdown(wait=True)
        self._app.close()
