"""Hands work to the decay worker through the broker: replies to store, and user turns
whose store was missed while memory was unavailable.

Every task goes through a spool first (an outbox): a SQLite table, in a file when
`spool_file` is set (the launcher puts it in the data folder) or else in memory. One
thread writes tasks into it, another publishes them oldest first and deletes what the
broker took. While the broker cannot be reached, tasks simply wait there, in order, and a
spool file still has them after a gateway restart. Only past the spool's bounds (tasks,
bytes) is a task dropped.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from kombu.messaging import Producer
from kombu.transport import redis as kombu_redis

from bionic_common.memory_types import Scope
from bionic_common.tasks import (
    REMEMBER_EXCHANGE,
    REMEMBER_USER_TURN,
    ExchangeMessage,
    UserTurnMessage,
)
from bionic_gateway.config import GatewaySettings
from bionic_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

# Retries of an unreachable broker: the first after RETRY_FIRST seconds, then doubling up
# to RETRY_MAX. They go on while tasks wait; the spool's bounds bound what waits.
RETRY_FIRST = 0.5
RETRY_MAX = 5.0
BATCH = 100  # tasks written to (or published from) the spool per transaction
CLOSE_TIMEOUT = 10.0  # seconds close() waits for the tasks in hand to be published
# A Redis that hangs (stopped, a network black hole) fails a publish after this many
# seconds instead of holding the publisher for as long as the hang lasts.
REDIS_TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}


class PublishingRedisChannel(kombu_redis.Channel):
    """kombu's Redis channel, with one redis-py client for every publish: the stock one
    builds a new client object per message (~0.07 ms, mostly its table of reply parsers).
    A client is safe to share between threads; its connections come from the channel's
    pool, which closes with the channel."""

    _publishing: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the channel's own client (consumers; this one never consumes)
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        if self._publishing is None:
            self._publishing = super()._create_client()  # type: ignore[no-untyped-call]
        return self._publishing


class PublishingRedisTransport(kombu_redis.Transport):
    Channel = PublishingRedisChannel


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    payload: str  # the message as JSON
    request_id: str

    @property
    def size(self) -> int:
        return len(self.payload.encode())


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    path: str | None  # None: in memory
    max_tasks: int
    max_bytes: int


class Spool:
    """Tasks waiting to be published, oldest first; shared by the two threads. A spool
    file is locked for this process alone (a second gateway on it fails at start)."""

    def __init__(self, limits: SpoolLimits) -> None:
        self.limits = limits
        if limits.path:
            os.makedirs(os.path.dirname(os.path.abspath(limits.path)), exist_ok=True)
        self._db = sqlite3.connect(limits.path or ":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        try:
            with self._db:
                self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # commits survive a crash
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, request_id TEXT NOT NULL, payload TEXT NOT NULL)"
                )
            self.tasks, self.bytes = self._db.execute(
                "SELECT count(*), coalesce(sum(length(CAST(payload AS BLOB))), 0) FROM tasks"
            ).fetchone()
        except sqlite3.Error:
            self._db.close()  # let go of the file (and of any lock taken on it)
            raise

    def append(self, tasks: list[Task]) -> list[Task]:
        """Append the tasks that fit within the bounds, in order; return the others. Raises
        sqlite3.Error (and keeps nothing) when the spool cannot be written."""
        kept, refused = [], []
        tasks_after, bytes_after = self.tasks, self.bytes
        for task in tasks:
            if (
                tasks_after < self.limits.max_tasks
                and bytes_after + task.size <= self.limits.max_bytes
            ):
                kept.append(task)
                tasks_after, bytes_after = tasks_after + 1, bytes_after + task.size
            else:
                refused.append(task)
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO tasks (name, request_id, payload) VALUES (?, ?, ?)",
                [(t.name, t.request_id, t.payload) for t in kept],
            )
            self.tasks, self.bytes = self.tasks + len(kept), self.bytes + sum(t.size for t in kept)
        return refused

    def oldest(self, limit: int) -> list[tuple[int, Task]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, request_id, payload FROM tasks ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [(row_id, Task(name, payload, rid)) for row_id, name, rid, payload in rows]

    def remove(self, rows: list[tuple[int, Task]]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i, _ in rows])
            self.tasks -= len(rows)
            self.bytes -= sum(task.size for _, task in rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class TaskQueue:
    """A call returns at once: the task goes to the spool on one thread and to the broker
    on another, so neither a response nor the spool ever waits for the broker. At most
    `max_pending` tasks wait to be spooled; past that or past the spool's bounds a task is
    dropped, counted, and logged once per burst of drops."""

    def __init__(
        self, broker_url: str, metrics: GatewayMetrics, max_pending: int, spool: SpoolLimits
    ) -> None:
        self._app = Celery("bionic_gateway", broker=broker_url)
        self._app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
        if broker_url.startswith(("redis://", "rediss://")):
            self._app.conf.broker_transport_options = REDIS_TIMEOUTS
        if broker_url.startswith("redis://"):  # rediss: the stock transport and its TLS
            self._app.conf.broker_transport = f"{__name__}:PublishingRedisTransport"
        # What a publish may raise when the broker is away: kombu's own error and the
        # transport's (send_task converted the latter); read off the transport, no network.
        with self._app.connection_for_write() as connection:
            self._broker_errors = (
                OperationalError,
                *connection.recoverable_connection_errors,
                *connection.recoverable_channel_errors,
            )
        self._default_queue = self._app.amqp.default_queue
        self._producer: Producer | None = None  # the publisher thread's own
        self._metrics = metrics
        self._inbox: queue.Queue[Task | None] = queue.Queue(max_pending)  # None: close
        self._spool = Spool(spool)
        self._wake = threading.Event()  # something new in the spool
        self._closing = threading.Event()  # everything in hand is in the spool
        self._drops = 0  # in the current burst of drops
        self._drops_lock = threading.Lock()
        metrics.spooled.set(self._spool.tasks)
        if self._spool.tasks:
            log.warning(
                "%d tasks wait in the spool %s from an earlier run; publishing them first",
                self._spool.tasks,
                spool.path,
            )
        self._threads = [
            threading.Thread(target=self._take, name="spooler", daemon=True),
            threading.Thread(target=self._publish, name="publisher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @classmethod
    def from_settings(cls, settings: GatewaySettings, metrics: GatewayMetrics) -> TaskQueue:
        limits = SpoolLimits(
            settings.spool_file, settings.spool_max_tasks, settings.spool_max_bytes
        )
        return cls(settings.broker_url, metrics, settings.max_pending_tasks, limits)

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

    def _submit(self, name: str, message: Any, request_id: str) -> None:
        task = Task(name, json.dumps(message), request_id)
        try:
            self._inbox.put_nowait(task)
        except queue.Full:
            self._drop(task, "the spool backlog is full")

    def close(self) -> None:
        """Spool the tasks in hand and publish what the broker takes within a bound. What is
        left stays in a spool file for the next start; a spool in memory loses it."""
        self._inbox.put(None)  # the spooler keeps taking: this waits for a slot at most
        for thread in self._threads:
            thread.join(CLOSE_TIMEOUT)
        if any(thread.is_alive() for thread in self._threads):
            log.error("the task queue did not stop within %.0fs", CLOSE_TIMEOUT)
            return
        if self._spool.tasks and self._spool.limits.path:
            log.warning(
                "%d tasks wait in the spool %s for the next start",
                self._spool.tasks,
                self._spool.limits.path,
            )
        elif self._spool.tasks:
            log.error(
                "%d tasks lost: the broker is unreachable and the spool is in memory",
                self._spool.tasks,
            )
        self._spool.close()
        self._app.close()

    # --- the spooler thread -------------------------------------------------------------

    def _take(self) -> None:
        while True:
            batch = [self._inbox.get()]
            while batch[-1] is not None and len(batch) < BATCH:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            tasks = [task for task in batch if task is not None]
            try:
                refused = self._spool.append(tasks)
            except sqlite3.Error as exc:
                for task in tasks:
                    self._drop(task, f"the spool cannot be written ({exc})")
            else:
                for task in refused:
                    self._drop(task, "the spool is full")
                if len(refused) < len(tasks):
                    self._end_drops()
            self._metrics.spooled.set(self._spool.tasks)
            if batch[-1] is None:
                self._closing.set()
            self._wake.set()
            if self._closing.is_set():
                return

    # --- the publisher thread -----------------------------------------------------------

    def _publish(self) -> None:
        try:
            self._publish_until_closed()
        finally:
            if self._producer is not None:
                self._producer.connection.release()

    def _publish_until_closed(self) -> None:
        delay = RETRY_FIRST
        outage_started: float | None = None
        while True:
            closing = self._closing.is_set()  # before reading: then nothing more comes
            self._wake.clear()
            rows = self._spool.oldest(BATCH)
            if not rows:
                if closing:
                    return
                self._wake.wait()
                continue
            done, error = self._send(rows)
            self._spool.remove(done)
            self._metrics.spooled.set(self._spool.tasks)
            if error is None:
                if outage_started is not None:
                    log.info(
                        "broker reachable again after %.0fs; the spool is being published",
                        time.monotonic() - outage_started,
                    )
                outage_started, delay = None, RETRY_FIRST
                continue
            if outage_started is None:
                outage_started = time.monotonic()
                log.warning("broker unreachable (%s): tasks wait in the spool", error)
            if self._closing.wait(delay):
                return  # stopping: what is left stays in the spool
            delay = min(delay * 2, RETRY_MAX)

    def _send(
        self, rows: list[tuple[int, Task]]
    ) -> tuple[list[tuple[int, Task]], Exception | None]:
        """Publish rows in order until one fails: the rows published, and the failure."""
        done = 0
        try:
            producer = self._producer or self._connect()
            for _, task in rows:
                self._publish_one(producer, task)
                self._metrics.queued.labels(task.name, "queued").inc()
                done += 1
        except self._broker_errors as exc:
            failure: Exception = exc
        except Exception as exc:  # a broker client bug must not end the thread: retried
            failure = exc
            log.exception(
                "publishing %s failed unexpectedly", rows[min(done, len(rows) - 1)][1].name
            )
        else:
            return rows, None
        self._disconnect()  # the next attempt starts on a new connection
        self._metrics.queued.labels(rows[done][1].name, "failed").inc()
        return rows[:done], failure

    def _connect(self) -> Producer:
        """The publisher's producer, on a connection of its own that it keeps: the queue is
        declared once per connection, not once per task (with the pool's acquire and
        release, that was a third of a publish's CPU)."""
        connection = self._app.connection_for_write()
        try:
            producer: Producer = connection.Producer(auto_declare=False)
            self._default_queue(producer.channel).declare()
        except BaseException:
            connection.collect()
            raise
        self._producer = producer
        return producer

    def _disconnect(self) -> None:
        if self._producer is not None:
            self._producer.connection.collect()  # drops the connection without network
            self._producer = None

    def _publish_one(self, producer: Producer, task: Task) -> None:
        """One task as celery's send_task would publish it to the default queue, without
        its routing, signals and event machinery (a third less CPU per task). The argsrepr
        is the request id: celery would otherwise render the message (the user's text)."""
        task_id = str(uuid.uuid4())
        message = self._app.amqp.create_task_message(
            task_id,
            task.name,
            [json.loads(task.payload)],
            {},
            root_id=task_id,
            argsrepr=f"(request {task.request_id})",
            kwargsrepr="{}",
        )
        producer.publish(  # type: ignore[no-untyped-call]
            message.body,
            exchange="",  # the default exchange: straight into the queue, as celery does
            routing_key=self._default_queue.name,
            serializer="json",
            headers=message.headers,
            delivery_mode=2,  # persistent
            retry=False,
            **message.properties,
        )

    # --- drops, each counted, logged once per burst -------------------------------------

    def _drop(self, task: Task, reason: str) -> None:
        self._metrics.queued.labels(task.name, "dropped").inc()
        with self._drops_lock:
            self._drops += 1
            first = self._drops == 1
        if first:
            log.error(
                "dropping tasks: %s (first: %s of request %s; %d spooled, %d bytes)",
                reason,
                task.name,
                task.request_id,
                self._spool.tasks,
                self._spool.bytes,
            )

    def _end_drops(self) -> None:
        with self._drops_lock:
            dropped, self._drops = self._drops, 0
        if dropped:
            log.error("%d tasks were dropped in all before the spool took tasks again", dropped)
