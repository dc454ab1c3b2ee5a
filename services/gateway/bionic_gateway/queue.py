"""Hands work to the decay worker through the broker: replies to store, and user turns
whose store was missed while memory was unavailable."""

from __future__ import annotations

import logging
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


class TaskQueue:
    """Each method blocks while it publishes: call it from a worker thread (a background
    task of the response does)."""

    def __init__(self, broker_url: str, metrics: GatewayMetrics) -> None:
        self._app = Celery("bionic_gateway", broker=broker_url)
        self._app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
        self._metrics = metrics

    def remember_exchange(self, scope: Scope, reply: str, request_id: str) -> bool:
        """Queue an assistant reply for storage."""
        message = ExchangeMessage(
            tenant=scope.tenant,
            user=scope.user,
            reply=reply,
            request_id=request_id,
            metadata={"request_id": request_id},
        )
        return self._send(REMEMBER_EXCHANGE, message, request_id)

    def remember_turn(self, scope: Scope, text: str, request_id: str, at: float) -> bool:
        """Queue a user message whose store was missed because memory was unavailable."""
        message = UserTurnMessage(
            tenant=scope.tenant,
            user=scope.user,
            text=text,
            request_id=request_id,
            metadata={"request_id": request_id, "said_at": at, "queued": "memory_degraded"},
        )
        return self._send(REMEMBER_USER_TURN, message, request_id)

    def _send(self, task: str, message: Any, request_id: str) -> bool:
        try:
            self._app.send_task(task, args=[message], retry=True, retry_policy=PUBLISH_RETRY)
        except OperationalError:
            log.exception("could not queue %s for request %s", task, request_id)
            self._metrics.queued.labels(task, "failed").inc()
            return False
        self._metrics.queued.labels(task, "queued").inc()
        return True

    def close(self) -> None:
        self._app.close()
