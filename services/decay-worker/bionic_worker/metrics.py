"""Prometheus metrics of the decay worker, fed by Celery's task signals."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery, signals
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.tasks = Counter(
            "bionic_worker_tasks",
            "Finished task runs by task name and outcome (success, retry, failure)",
            ["task", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "bionic_worker_task_duration_seconds",
            "Run time of one task attempt",
            ["task"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.retries = Counter(
            "bionic_worker_task_retries",
            "Retries scheduled, by task name and reason",
            ["task", "reason"],
            registry=registry,
        )
        self.forgotten = Counter(
            "bionic_worker_memories_forgotten",
            "Memories forgotten by pruning, by tier",
            ["tier"],
            registry=registry,
        )
        self.merged = Counter(
            "bionic_worker_memories_merged",
            "Near-duplicate memories merged into a representative",
            registry=registry,
        )
        self.summaries = Counter(
            "bionic_worker_summaries",
            "Summaries stored, by how they were made (llm, llm_sentence_cut, sentence_cut)",
            ["method"],
            registry=registry,
        )
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def connect(self, app: Celery) -> None:
        """Count every task run of `app` by its outcome, and time it."""

        @signals.task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
        def started(task_id: str, task: Any, **_: Any) -> None:
            if task.app is app:
                with self._lock:
                    self._started[task_id] = time.perf_counter()

        @signals.task_postrun.connect(weak=False)  # type: ignore[untyped-decorator]
        def finished(task_id: str, task: Any, state: str, **_: Any) -> None:
            if task.app is not app:
                return
            with self._lock:
                began = self._started.pop(task_id, None)
            if began is not None:
                self.duration.labels(task.name).observe(time.perf_counter() - began)
            outcome = {"SUCCESS": "success", "RETRY": "retry"}.get(state, "failure")
            self.tasks.labels(task.name, outcome).inc()


class QueueLength(Collector):
    """`bionic_worker_queue_length`: tasks waiting in the broker, read at scrape time."""

    def __init__(self, read: Callable[[], int | None], queue: str) -> None:
        self._read = read
        self._queue = queue
        self._lock = threading.Lock()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = self._family()
        with self._lock:  # scrapes may overlap; the broker connection is not shared
            length = self._read()
        if length is not None:  # unreachable broker: no sample rather than a wrong one
            gauge.add_metric([self._queue], length)
        yield gauge

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "bionic_worker_queue_length",
            "Tasks waiting in the broker (not yet taken by a worker)",
            labels=["queue"],
        )
