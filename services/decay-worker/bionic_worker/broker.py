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

`GuardedRedisTransport` also hands tasks over without losing one. Kombu takes a message with
BRPOP, which removes it from its list, and records it as unacknowledged with a second
command once the reply arrived: a Redis stopped or killed in between (a reply it never
sent, or an unacked write that failed) lost the task — seen once per few busy stops of the
broker — and one whose unacked write was done but not answered held the task until the
visibility timeout (tests/worker/test_redis_handover.py reproduces all three). Here the
take is one Lua script that moves the message from its list into a hand-over hash (with
the time, indexed), so it is in Redis at every instant; once the worker has it, one
MULTI/EXEC moves it from the hand-over to kombu's unacked set, where the usual
acknowledgement and visibility timeout take over. An entry left in the hand-over for
`handover_timeout` seconds (its reply was lost, or its worker died before recording it) is
put back at the head of its list. A record cut by a lost connection does not hold the task
back: it runs at once, and is delivered once more later from wherever the record left it
(tasks are idempotent). The wait for a message is a BLMOVE of the first list onto itself
(no message moves); other lists — priorities, further queues — are looked at every
`brpop_timeout` second.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from json import dumps, loads
from queue import Empty
from typing import Any

from kombu.connection import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import sqlalchemy as sqla
from kombu.transport import virtual
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import create_engine, delete, event, text, update

log = logging.getLogger(__name__)
SQLITE_PREFIX = "sqla+"
RESTORE_EVERY = 5.0  # seconds between scans for expired leases
POLLING_INTERVAL = 0.1  # seconds an idle SQLite consumer waits before looking again
HANDOVER_TIMEOUT = 15.0  # seconds a task may sit in Redis's hand-over before it is put back
HANDOVER_RESTORE_LIMIT = 100  # hand-over entries put back per scan
SOCKET_TIMEOUT = 10.0  # seconds a Redis command or connect may take

# KEYS: hand-over hash, its index, then the lists in the order to look at them; ARGV: now.
# The first message of the first non-empty list goes into the hand-over (by delivery tag,
# with its list) before it leaves the list, so that a Redis at its memory limit refuses the
# script before anything moved. Returns {list, message}, or nil when every list is empty.
TAKE_SCRIPT = """
for i = 3, #KEYS do
  local message = redis.call('LINDEX', KEYS[i], -1)
  if message then
    local ok, decoded = pcall(cjson.decode, message)
    local tag = ok and type(decoded) == 'table' and type(decoded.properties) == 'table'
      and decoded.properties.delivery_tag
    if type(tag) == 'string' then
      redis.call('HSET', KEYS[1], tag, cjson.encode({KEYS[i], message}))
      redis.call('ZADD', KEYS[2], ARGV[1], tag)
    end
    redis.call('RPOP', KEYS[i])
    return {KEYS[i], message}
  end
end
return nil
"""

# KEYS: hand-over hash, its index; ARGV: the oldest time kept, how many at most. Puts the
# older entries back at the head of their lists (where the next take looks first).
RESTORE_SCRIPT = """
local tags = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
for _, tag in ipairs(tags) do
  local entry = redis.call('HGET', KEYS[1], tag)
  if entry then
    local list_message = cjson.decode(entry)
    redis.call('RPUSH', list_message[1], list_message[2])
    redis.call('HDEL', KEYS[1], tag)
  end
  redis.call('ZREM', KEYS[2], tag)
end
return #tags
"""


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
            "handover_timeout": HANDOVER_TIMEOUT,
            # A hanging Redis (stopped, a network black hole) fails a command after this
            # long and the worker reconnects, instead of waiting as long as the hang lasts.
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": SOCKET_TIMEOUT,
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


class HandOverQoS(kombu_redis.QoS):
    """Kombu's Redis QoS, whose record of a taken message moves it out of the hand-over,
    and which puts back hand-over entries older than the hand-over timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._next_handover_scan = 0.0

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        record = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        channel = self.channel
        try:
            with channel.conn_or_acquire() as client, client.pipeline() as pipe:
                # MULTI/EXEC: the message is in the hand-over or in unacked, never in neither
                pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
                pipe.hset(self.unacked_key, delivery_tag, record)
                pipe.hdel(channel.handover_key, delivery_tag)
                pipe.zrem(channel.handover_index_key, delivery_tag)
                pipe.execute()
        except channel.connection_errors as exc:
            # Redis went away with the record in flight, written or not: the task runs now
            # rather than wait in the hand-over or, written, in unacked until the
            # visibility timeout; either delivers it again later (tasks are idempotent).
            log.warning("task %s taken but its record failed (%r): run anyway", delivery_tag, exc)
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        self._require_connection()
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self._require_connection()
        super().reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]

    def _require_connection(self) -> None:
        """A task that finishes after its channel was closed with a lost connection cannot
        be acknowledged: kombu would die of an AttributeError rebuilding the channel's pool
        (seen: "Unrecoverable error" ended the worker). A connection error instead is logged
        by Celery ("Couldn't ack"); the task stays in unacked and comes back after the
        visibility timeout (tasks are idempotent)."""
        if self.channel.connection is None:
            raise RedisConnectionError("the channel was closed with its broker connection")

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        super().restore_visible(start, num, interval)  # type: ignore[no-untyped-call]
        if time.monotonic() < self._next_handover_scan:
            return
        channel = self.channel
        self._next_handover_scan = time.monotonic() + channel.handover_timeout / 2
        with channel.conn_or_acquire() as client:
            restored = client.eval(
                RESTORE_SCRIPT,
                2,
                channel.prefixed(channel.handover_key),
                channel.prefixed(channel.handover_index_key),
                time.time() - channel.handover_timeout,
                HANDOVER_RESTORE_LIMIT,
            )
        if restored:
            log.warning("%d tasks whose hand-over to a worker was cut are queued again", restored)


class GuardedRedisChannel(kombu_redis.Channel):
    """The Redis channel that hands messages over without losing one, and is closed
    without a restore it cannot do (see module doc)."""

    QoS = HandOverQoS
    handover_timeout = HANDOVER_TIMEOUT
    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options,
        "handover_timeout",
    )
    _peek_next = False  # the next command waits for a message instead of taking one
    _sent = "EVAL"  # the command whose reply the consumer connection waits for

    @property
    def handover_key(self) -> str:
        return f"{self.unacked_key}_handover"

    @property
    def handover_index_key(self) -> str:
        return f"{self.unacked_key}_handover_index"

    def prefixed(self, key: str) -> str:
        """A key as Redis knows it (commands sent raw or in a script are not prefixed)."""
        return f"{self.global_keyprefix}{key}"

    def take_command(self, keys: list[str]) -> tuple[Any, ...]:
        """The arguments of an EVAL that takes one message from the first non-empty list."""
        handover = (self.prefixed(self.handover_key), self.prefixed(self.handover_index_key))
        lists = [self.prefixed(key) for key in keys]
        return ("EVAL", TAKE_SCRIPT, 2 + len(lists), *handover, *lists, time.time())

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._list(queue, pri) for pri in self.priority_steps for queue in queues]
        if self._peek_next:
            first = self.prefixed(keys[0])
            command: tuple[Any, ...] = ("BLMOVE", first, first, "RIGHT", "RIGHT", timeout or 0)
        else:
            command = self.take_command(keys)
        self._sent = command[0]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                reply = self.client.parse_response(self.client.connection, self._sent, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if self._sent == "BLMOVE" or not reply:
                # a message came (take it next) or the wait ended (look at every list)
                self._peek_next = self._sent != "BLMOVE"
                raise Empty()
            key, item = reply
            queue = _text(key).removeprefix(self.global_keyprefix).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            self.connection._deliver(loads(_text(item)), queue)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()  # type: ignore[no-untyped-call]

    def _get(self, queue: str, timeout: Any = None) -> Any:
        keys = [self._list(queue, pri) for pri in self.priority_steps]
        with self.conn_or_acquire() as client:
            reply = client.execute_command(*self.take_command(keys))
            self._maybe_update_queues_expire(client, queue)  # type: ignore[no-untyped-call]
        if not reply:
            raise Empty()
        return loads(_text(reply[1]))

    def _list(self, queue: str, priority: int) -> str:
        return str(self._q_for_pri(queue, priority))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        # self.connection is None once closed (the pidbox closes its channel a second time)
        gone = self.connection is not None and self.connection.client is None
        if gone and self._qos is not None:
            log.warning("broker connection gone: unacknowledged tasks wait for redelivery")
            self._qos.restore_at_shutdown = False
        super().close()  # type: ignore[no-untyped-call]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class GuardedRedisTransport(kombu_redis.Transport):
    Channel = GuardedRedisChannel
