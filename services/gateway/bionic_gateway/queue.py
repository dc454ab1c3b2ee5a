"""Hands finished replies to the decay worker through the broker."""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import OperationalError

from bionic_common.tasks import REMEMBER_EXCHANGE, ExchangeMessage

log = logging.getLogger(__name__)

# Publishing blocks a thread; bounded so a dead broker cannot pile up blocked threads.
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}


class TaskQueue:
    def __init__(self, broker_url: str) -> None:
        self._app = Celery("bionic_gateway", broker=broker_url)
        self._app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)

    def remember_exchange(self, message: ExchangeMessage) -> bool:
        """Queue a reply for storage (blocking; call from a worker thread)."""
        try:
            self._app.send_task(
                REMEMBER_EXCHANGE, args=[message], retry=True, retry_policy=PUBLISH_RETRY
            )
        except OperationalError:
            log.exception("could not queue the reply of request %s", message["request_id"])
            return False
        return True

    def close(self) -> None:
        self._app.close()
