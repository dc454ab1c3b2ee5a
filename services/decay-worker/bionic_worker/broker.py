"""Broker wiring: Redis, or kombu's SQLAlchemy transport on SQLite with redelivery.

Redis keeps a taken-but-unacknowledged task in its unacked set and delivers it again once
`visibility_timeout` has passed — that is how a task of a worker killed with -9 comes back.

Kombu's SQLAlchemy transport has no such thing: taking a message only marks its row
invisible (and stamps its `timestamp` column), acknowledging changes nothing in the
database, and a worker killed with -9 leaves the row invisible forever — the task is
lost. `LeasedChannel` gives it the same contract as Redis: an acknowledged (or rejected)
message's row is deleted, a requeued one is made visible again, and a row that stayed
invisible for longer than the visibility timeout is made visible again (a lease that
expired). Producers (the gateway) publish through the stock transport unchanged.

On Redis, `GuardedRedisTransport` keeps the worker alive through a lost broker: kombu
(5.x) closes a channel whose transport already let go of its connection details and, in
restoring the unacknowledged messages on close, dies of an AttributeError ("'NoneType'
object has no attribute 'hostname'"), which ends the worker ("Unrecoverable error") and
the tasks it was running. With the broker gone there is nothing to restore them to
anyway: they stay in Redis's unacked set (and come back after the visibility timeout,
idempotent) while the worker finishes what it runs and reconnects.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from json import loads
from queue import Empty
from typing import Any

from kombu.connection import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import sqlalchemy as sqla
from sqlalchemy import create_engine, delete, event, text, update

log = logging.getLogger(__name__)
SQLITE_PREFIX = "sqla+"
RESTORE_EVERY = 5.0  # seconds between scans for expired leases
POLLING_INTERVAL = 0.1  # seconds an idle SQLite consumer waits before looking again


def is_sqlite(broker_url: str) -> bool:
    return broker_url.startswith(f"{SQLITE_PREFIX}sqlite")


def connection_settings(broker_url: str, visibility_timeout: float) -> dict[str, Any]:
    """Celery settings that connect to `broker_url` with redelivery after a lost worker."""
    if is_sqlite(broker_url):
        return {
            "broker_url": broker_url.removeprefix(SQLITE_PREFIX),
            "broker_transport": f"{__name__}:LeasedTransport",
            "broker_transport_options": {
                "visibility_timeout": visibility_timeout,
                "polling_interval": POLLING_INTERVAL,
            },
            # A polling consumer whose threads are all busy looks again only after the
            # polling interval: a few tasks in hand per thread keep the threads fed.
            "worker_prefetch_multiplier": 4,
        }
    guarded = {"broker_transport": f"{__name__}:GuardedRedisTransport"}
    return {
        "broker_url": broker_url,
        **(guarded if broker_url.startswith("redis://") else {}),
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            # scan for expired deliveries well within the timeout
            "unacked_restore_interval": min(10.0, visibility_timeout / 4),
        },
    }


class LeasedChannel(sqla.Channel):
    """The SQLAlchemy channel with acknowledgements and expiring leases (see module doc)."""

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)  # type: ignore[no-untyped-call]
        options = connection.client.transport_options
        self._visibility = datetime.timedelta(seconds=float(options["visibility_timeout"]))
        self._rows: dict[str, int] = {}  # delivery tag -> row id, for taken messages
        self._rows_lock = threading.Lock()
        self._next_restore = 0.0

    def _engine_from_config(self) -> Any:
        # The stock channel passes its transport options on to create_engine; ours are not
        # engine options.
        engine = create_engine(self.connection.client.hostname)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def _get(self, queue: str, timeout: Any = None) -> Any:
        if time.monotonic() >= self._next_restore:
            self._restore_expired()
            self._next_restore = time.monotonic() + RESTORE_EVERY
        obj = self._get_or_create(queue)  # type: ignore[no-untyped-call]
        self.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            msg = (
                self.session.query(self.message_cls)
                .filter(self.message_cls.queue_id == obj.id)
                .filter(self.message_cls.visible.is_(True))
                .order_by(self.message_cls.sent_at, self.message_cls.id)
                .limit(1)
                .first()
            )
            if msg is None:
                raise Empty()
            msg.visible = False  # the update stamps `timestamp`: the lease starts now
            payload = loads(msg.payload)
            with self._rows_lock:
                self._rows[payload["properties"]["delivery_tag"]] = msg.id
            return payload
        finally:
            self.session.commit()

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple=multiple)  # type: ignore[no-untyped-call]
        self._delete_row(delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        # requeue: via _restore
        super().basic_reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        if not requeue:
            self._delete_row(delivery_tag)

    def _restore(self, message: Any) -> None:
        """Requeue a taken message by making its own row visible (not by copying it)."""
        with self._rows_lock:
            row = self._rows.pop(message.delivery_tag, None)
        if row is None:
            super()._restore(message)  # type: ignore[no-untyped-call]
            return
        with self._engine.begin() as db:
            db.execute(
                update(self.message_cls.__table__)
                .where(self.message_cls.id == row)
                .values(visible=True)
            )

    def _delete_row(self, delivery_tag: str) -> None:
        with self._rows_lock:
            row = self._rows.pop(delivery_tag, None)
        if row is not None:
            with self._engine.begin() as db:
                db.execute(delete(self.message_cls.__table__).where(self.message_cls.id == row))

    def _restore_expired(self) -> None:
        """Make visible again every message whose lease ran out (its worker died)."""
        # The transport stamps rows with naive local time, so compare in the same.
        expired = datetime.datetime.now() - self._visibility
        with self._rows_lock:
            mine = list(self._rows.values())
        with self._engine.begin() as db:
            db.execute(
                update(self.message_cls.__table__)
                .where(self.message_cls.visible.is_(False))
                .where(self.message_cls.sent_at < expired)
                .where(self.message_cls.id.not_in(mine))
                .values(visible=True)
            )

    @property
    def _engine(self) -> Any:
        engine, _ = self._open()  # type: ignore[no-untyped-call]
        return engine


def _sqlite_pragmas(connection: Any, _: Any) -> None:
    """Write-ahead logging: consumers and producers stop blocking each other, and a commit
    is one append instead of a journal round trip (synchronous=NORMAL keeps every commit
    through a crash of the process; a power cut may lose the last few)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class LeasedTransport(sqla.Transport):
    Channel = LeasedChannel


def queue_length(connection: Connection, queue: str) -> int | None:
    """Messages waiting in `queue` (not those taken by a worker); None when the broker
    cannot be reached."""
    try:
        with connection.channel() as channel:  # type: ignore[no-untyped-call]
            declared = channel.queue_declare(queue=queue)
    except connection.connection_errors + connection.channel_errors as exc:
        log.warning("could not read the length of queue %s: %s", queue, exc)
        return None
    return int(declared.message_count)


class GuardedRedisChannel(kombu_redis.Channel):
    """The Redis channel, closed without a restore it cannot do (see module doc)."""

    def close(self) -> None:
        if self.connection.client is None and self._qos is not None:
            log.warning("broker connection gone: unacknowledged tasks wait for redelivery")
            self._qos.restore_at_shutdown = False
        super().close()  # type: ignore[no-untyped-call]


class GuardedRedisTransport(kombu_redis.Transport):
    Channel = GuardedRedisChannel
