"""The Celery app of the decay worker: thin named tasks over `logic`, and the beat schedule.

Delivery is at least once (acks_late; a worker lost mid-task has its task delivered again
after the broker's visibility timeout) and every task is idempotent, so each change lands
exactly once. A task whose service is down retries with jittered exponential backoff, a
bounded number of times; meanwhile it waits in the broker, not in the request path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from celery import Celery, Task, signals
from celery.exceptions import SoftTimeLimitExceeded
from celery.schedules import crontab

from bionic_common.clients import EmbedderClient, MemoryClient, is_unavailable
from bionic_common.memory_types import Memory, Scope, Tier
from bionic_common.tasks import (
    PRUNE_DECAYED,
    REMEMBER_EXCHANGE,
    REMEMBER_USER_TURN,
    SUMMARIZE,
    SUPPRESS_CLUSTERS,
    SUPPRESS_SCOPE,
    ExchangeMessage,
    ScopeMessage,
    SummarizeMessage,
    UserTurnMessage,
)
from bionic_worker import logic
from bionic_worker.broker import connection_settings
from bionic_worker.config import WorkerSettings
from bionic_worker.metrics import WorkerMetrics
from bionic_worker.summary import Summarizer, SummaryOptions
from bionic_worker.watchdog import Watchdog

log = logging.getLogger(__name__)
T = TypeVar("T")
QUEUE = "celery"
TIERS = {"stm": Tier.SHORT_TERM, "ltm": Tier.LONG_TERM}


class Outage:
    """Once a task found a service down, the others retry at once instead of each
    waiting its RPC deadline against the same dead service."""

    def __init__(self, pause: float) -> None:
        self._pause = pause
        self._until = 0.0

    def start(self) -> None:
        self._until = time.monotonic() + self._pause

    def ongoing(self) -> bool:
        return time.monotonic() < self._until


class Runner(threading.local):
    """Runs task coroutines: each task thread keeps its own event loop and clients."""

    def __init__(self, settings: WorkerSettings, opened: list[Runner], watchdog: Watchdog) -> None:
        self.settings = settings
        self._watchdog = watchdog  # one per process, shared by every thread's runner
        self.loop: asyncio.AbstractEventLoop | None = None
        self.services: logic.Services | None = None
        self._opened = opened  # every thread's runner that connected, for close()
        opened.append(self)

    def run(
        self,
        name: str,
        make: Callable[[logic.Services], Awaitable[T]],
        soft_limit: float,
        hard_limit: float,
    ) -> T:
        """Run `make(services)`; past `soft_limit` it is cancelled (the task fails), and
        if the thread is still stuck at `hard_limit` the worker process exits so a fresh
        one takes over (the task is then delivered again, like a killed prefork child)."""
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        if self.services is None:
            self.services = self.loop.run_until_complete(self._connect())
        services = self.services
        watched = self._watchdog.arm(name, hard_limit)
        try:
            return self.loop.run_until_complete(
                asyncio.wait_for(_awaited(make(services)), soft_limit)
            )
        except TimeoutError as exc:
            raise SoftTimeLimitExceeded(f"{name} ran past {soft_limit:g}s") from exc
        finally:
            self._watchdog.disarm(watched)

    def close(self) -> None:
        """Close this thread's clients and loop (from any thread, once tasks stopped)."""
        if self.loop is not None:
            if self.services is not None:
                self.loop.run_until_complete(self.services.close())
            self.loop.close()

    async def _connect(self) -> logic.Services:
        s = self.settings
        return logic.Services(
            embedder=EmbedderClient(s.embedder_target),
            memory=MemoryClient(s.memory_target),
            summarizer=Summarizer(
                s.upstream_base_url,
                SummaryOptions(
                    max_chars=s.summary_max_chars,
                    max_tokens=s.summary_max_tokens,
                    temperature=s.summary_temperature,
                    timeout=s.summary_timeout,
                    model=s.summary_model,
                ),
                api_key=s.upstream_api_key,
            ),
            timeout=s.rpc_timeout,
        )


async def _awaited(value: Awaitable[T]) -> T:
    return await value


def _hard_limit_exceeded(name: str, limit: float) -> None:
    log.critical("%s is stuck past its hard time limit of %gs; exiting", name, limit)
    os._exit(70)


def create_app(settings: WorkerSettings, metrics: WorkerMetrics) -> Celery:
    app = Celery("bionic_worker")
    app.conf.update(
        **connection_settings(settings.broker_url, settings.visibility_timeout),
        task_default_queue=QUEUE,
        task_acks_late=True,  # a task is acknowledged only once it finished
        task_reject_on_worker_lost=True,  # a lost worker's task goes back to the queue
        task_ignore_result=True,  # no result backend: nothing reads results
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # A broker lost while running (Redis restarted) is reconnected to by the worker
        # itself: attempts 2 s, 4 s… apart (at most 30 s), 100 of them (~45 min), then the
        # worker exits for its supervisor to restart it.
        broker_connection_retry=True,
        broker_connection_max_retries=100,
        # Tasks running when the broker goes finish their work; their acknowledgement is
        # lost with the connection, so they are delivered again later and change nothing.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        beat_schedule=beat_schedule(settings),
    )
    metrics.connect(app)
    runners: list[Runner] = []
    runner = Runner(settings, runners, Watchdog(_hard_limit_exceeded))

    @signals.worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def close_clients(**_: Any) -> None:
        for opened in runners:
            opened.close()

    outage = Outage(settings.outage_pause)
    soft, hard = settings.soft_time_limit, settings.time_limit

    def backoff(retries: int) -> float:
        """Exponential, capped, with jitter so a recovered service is not stampeded."""
        return min(2.0**retries, settings.retry_backoff_max) * random.uniform(0.5, 1.0)

    def run(
        task: Task,
        make: Callable[[logic.Services], Awaitable[T]],
        soft_limit: float = soft,
        hard_limit: float = hard,
    ) -> T:
        """Run the logic; if the memory service or the embedder is down, retry later."""
        if outage.ongoing():
            metrics.retries.labels(task.name, "outage").inc()
            raise task.retry(countdown=backoff(task.request.retries))
        try:
            return runner.run(task.name, make, soft_limit, hard_limit)
        except grpc.aio.AioRpcError as exc:
            if not is_unavailable(exc):
                raise
            outage.start()
            metrics.retries.labels(task.name, exc.code().name.lower()).inc()
            log.warning("%s: a service is unavailable (%s); retrying", task.name, exc.code().name)
            raise task.retry(exc=exc, countdown=backoff(task.request.retries)) from exc

    options: dict[str, Any] = {"bind": True, "max_retries": settings.max_retries}

    def refine_later(memory: Memory) -> None:
        if logic.needs_summary(memory, settings.summary_threshold):
            summarize.delay(
                SummarizeMessage(
                    tenant=memory.scope.tenant, user=memory.scope.user, memory_id=memory.id
                )
            )

    @app.task(name=REMEMBER_EXCHANGE, **options)  # type: ignore[untyped-decorator]
    def remember_exchange(self: Task, message: ExchangeMessage) -> str:
        memory = run(self, lambda s: logic.remember_exchange(s, message))
        refine_later(memory)
        return memory.id

    @app.task(name=REMEMBER_USER_TURN, **options)  # type: ignore[untyped-decorator]
    def remember_user_turn(self: Task, message: UserTurnMessage) -> str:
        memory = run(self, lambda s: logic.remember_user_turn(s, message))
        refine_later(memory)
        return memory.id

    @app.task(name=SUMMARIZE, **options)  # type: ignore[untyped-decorator]
    def summarize(self: Task, message: SummarizeMessage) -> str:
        done = run(self, lambda s: logic.summarize(s, message, settings.summary_threshold))
        if done is None:
            return "skipped"
        _, summary = done
        metrics.summaries.labels(summary.method).inc()
        return summary.method

    @app.task(name=PRUNE_DECAYED, **options)  # type: ignore[untyped-decorator]
    def prune_decayed(self: Task, tier: str) -> int:
        pruned = run(self, lambda s: logic.prune_decayed(s, TIERS[tier]))
        forgotten = {
            "ltm": pruned.forgotten_long_term + pruned.archived,
            "stm": pruned.forgotten_short_term,
            "archive": pruned.forgotten_archive,
        }
        for name, count in forgotten.items():
            metrics.forgotten.labels(name).inc(count)
        total = sum(forgotten.values())
        log.info("pruned %s: %d memories forgotten", tier, total)
        return total

    @app.task(name=SUPPRESS_CLUSTERS, **options)  # type: ignore[untyped-decorator]
    def suppress_clusters(self: Task) -> int:
        scopes = run(self, logic.list_scopes)
        for scope in scopes:
            suppress_scope.delay(ScopeMessage(tenant=scope.tenant, user=scope.user))
        log.info("cluster suppression queued for %d users", len(scopes))
        return len(scopes)

    @app.task(name=SUPPRESS_SCOPE, **options)  # type: ignore[untyped-decorator]
    def suppress_scope(self: Task, message: ScopeMessage) -> int:
        scope = Scope(tenant=message["tenant"], user=message["user"])
        done = run(
            self,
            lambda s: logic.suppress_scope(
                s,
                scope,
                settings.suppress_similarity,
                settings.suppress_max_memories,
                settings.suppress_soft_time_limit,
            ),
            soft_limit=settings.suppress_soft_time_limit,
            hard_limit=settings.suppress_time_limit,
        )
        metrics.merged.inc(done.merged)
        return done.merged

    return app


def beat_schedule(settings: WorkerSettings) -> dict[str, dict[str, Any]]:
    """Keyed by task name. A run that waited past its period is dropped (`expires`), so a
    long-stopped worker does not come back to a pile of identical prunes."""
    minute, hour, day_of_month, month_of_year, day_of_week = settings.suppress_cron.split()
    return {
        f"{PRUNE_DECAYED}:stm": {
            "task": PRUNE_DECAYED,
            "schedule": settings.prune_short_term_every,
            "args": ["stm"],
            "options": {"expires": settings.prune_short_term_every},
        },
        f"{PRUNE_DECAYED}:ltm": {
            "task": PRUNE_DECAYED,
            "schedule": settings.prune_long_term_every,
            "args": ["ltm"],
            "options": {"expires": settings.prune_long_term_every},
        },
        SUPPRESS_CLUSTERS: {
            "task": SUPPRESS_CLUSTERS,
            "schedule": crontab(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
            ),
            "options": {"expires": 3600.0},
        },
    }
