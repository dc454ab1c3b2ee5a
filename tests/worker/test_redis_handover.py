"""A task Redis is handing to the worker when it goes away is not lost, nor held back.

Kombu's stock Redis transport takes a message with BRPOP (off its list, in the append-only
file) and records it as unacknowledged with a second command once the reply arrived.
Each test cuts that hand-over on a real redis-server, the ways a stopped Redis cuts it:
the reply of the take never arrives, Redis is gone when the worker records what it took,
or the reply of the record never arrives. The stock transport loses the task the first two
ways and holds it until the visibility timeout the third; the worker's
`GuardedRedisTransport` keeps it in Redis and delivers it (again)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Message, Producer, Queue
from kombu.transport import redis as kombu_redis

from bionic_worker.broker import GuardedRedisTransport
from tests.support.stack import AofRedis

QUEUE = "tasks"
TRANSPORTS = [
    pytest.param(kombu_redis.Transport, False, id="stock"),
    pytest.param(GuardedRedisTransport, True, id="guarded"),
]
QUICK_HANDOVER = {"handover_timeout": 0.5}  # a cut hand-over is put back 0.5 s later


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[AofRedis]:
    server = AofRedis(tmp_path)
    server.start()
    yield server
    server.stop()


class CuttingProxy:
    """A TCP proxy in front of Redis that drops the first reply carrying `marker` (or, with
    `after_request`, every reply after the first request carrying it) and closes that
    connection: Redis ran the command, its client never hears the answer (as when Redis
    stops before it writes its replies out, or the network drops)."""

    def __init__(self, redis_port: int, marker: bytes, after_request: bool = False) -> None:
        self.redis_port = redis_port
        self.marker = marker
        self.after_request = after_request
        self.cut = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            cut = threading.Event()  # this connection's replies are dropped from now on
            for args in ((client, upstream, False, cut), (upstream, client, True, cut)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, replies: bool, cut: threading.Event
    ) -> None:
        try:
            while data := source.recv(65536):
                marked = self.marker in data and not self.cut.is_set()
                if replies and (cut.is_set() or (marked and not self.after_request)):
                    self.cut.set()
                    break
                if not replies and marked and self.after_request:
                    cut.set()
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def publish(url: str, marker: str, queue: str = QUEUE, **options: Any) -> None:
    """Publish one message the way the gateway does (stock transport), marked."""
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        producer.publish(
            {"marker": marker},
            routing_key=queue,
            declare=[Queue(queue)],
            headers={"marker": marker},
            **options,
        )


def where(url: str, marker: str) -> list[str]:
    """The Redis keys whose list or hash values hold the marked message."""
    client = redis.Redis.from_url(url)
    found = []
    for raw in client.keys("*"):
        key = raw.decode()
        kind = client.type(key).decode()
        if kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = client.hvals(key)
        else:
            continue
        if any(marker.encode() in value for value in values):
            found.append(key)
    return sorted(found)


def consume(
    url: str,
    queues: list[str],
    count: int,
    transport: type = GuardedRedisTransport,
    options: dict[str, Any] | None = None,
    wait: float = 30,
    received: list[Any] | None = None,
) -> list[Any]:
    """Receive and acknowledge `count` messages (or what came within `wait` seconds), into
    `received` when given (to see what came before an error)."""
    received = [] if received is None else received

    def on_message(body: Any, message: Message) -> None:
        received.append(body)
        message.ack()

    with Connection(url, transport=transport, transport_options=options or {}) as connection:
        channel = connection.channel()
        consumer = Consumer(channel, [Queue(name) for name in queues], callbacks=[on_message])
        with consumer:
            deadline = time.monotonic() + wait
            while len(received) < count and time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=0.5)
                except TimeoutError:
                    pass
    return received


@pytest.mark.parametrize(("transport", "keeps"), TRANSPORTS)
def test_a_take_whose_reply_is_lost_is_delivered_again(
    broker: AofRedis, transport: type, keeps: bool
) -> None:
    marker = f"reply-lost-{uuid.uuid4()}"
    publish(broker.url, marker)
    proxy = CuttingProxy(broker.port, marker.encode())
    try:
        with pytest.raises(redis.ConnectionError):
            consume(f"redis://127.0.0.1:{proxy.port}/0", [QUEUE], 1, transport)
    finally:
        proxy.close()
    assert proxy.cut.is_set()  # Redis answered the take, the consumer never heard it
    if not keeps:
        assert where(broker.url, marker) == []  # taken off the list, recorded nowhere: lost
        return
    assert where(broker.url, marker) == ["unacked_handover"]
    assert consume(broker.url, [QUEUE], 1, options=QUICK_HANDOVER) == [{"marker": marker}]
    assert where(broker.url, marker) == []  # acknowledged


@pytest.mark.parametrize(("transport", "keeps"), TRANSPORTS)
def test_a_take_redis_stops_before_it_is_recorded_is_delivered_again(
    broker: AofRedis, transport: type, keeps: bool
) -> None:
    """Redis is stopped (SIGTERM, its append-only file written) after the worker took the
    message and before the worker recorded it as unacknowledged, then started again."""

    class StopsRedisOnDelivery(transport):  # type: ignore[valid-type,misc]
        def _deliver(self, message: Any, queue: str) -> None:
            broker.stop()
            super()._deliver(message, queue)

    marker = f"record-failed-{uuid.uuid4()}"
    publish(broker.url, marker)
    received: list[Any] = []
    try:
        with pytest.raises(redis.ConnectionError):  # the stock record, or the ack
            consume(broker.url, [QUEUE], 1, StopsRedisOnDelivery, received=received)
    finally:
        broker.start()
    if not keeps:
        assert received == []  # the record failed before the task could run
        assert where(broker.url, marker) == []
        return
    assert received == [{"marker": marker}]  # it ran all the same
    assert where(broker.url, marker) == ["unacked_handover"]  # and comes once more
    assert consume(broker.url, [QUEUE], 1, options=QUICK_HANDOVER) == [{"marker": marker}]
    assert where(broker.url, marker) == []


@pytest.mark.parametrize(("transport", "runs"), TRANSPORTS)
def test_a_take_whose_record_is_not_answered_runs_at_once(
    broker: AofRedis, transport: type, runs: bool
) -> None:
    """Redis wrote the record (the message is in unacked) but its answer is lost: the
    stock transport does not run the task, which waits out the visibility timeout (600 s
    in the worker); the guarded one runs it (and acknowledges it on a new connection)."""
    marker = f"record-unanswered-{uuid.uuid4()}"
    publish(broker.url, marker)
    proxy = CuttingProxy(broker.port, marker.encode(), after_request=True)
    url = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        if runs:
            assert consume(url, [QUEUE], 1, transport) == [{"marker": marker}]
        else:
            received: list[Any] = []
            with pytest.raises(redis.ConnectionError):
                consume(url, [QUEUE], 1, transport, received=received)
            assert received == []
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert where(broker.url, marker) == ([] if runs else ["unacked"])


def test_priorities_and_several_queues_are_all_consumed(broker: AofRedis) -> None:
    """Only the first list is waited on; the others (priorities, further queues) are
    looked at between waits, so every message still comes, highest priority first."""
    publish(broker.url, "plain")
    publish(broker.url, "low", priority=9)
    publish(broker.url, "high", priority=0)
    publish(broker.url, "other queue", queue="other")
    received = consume(broker.url, [QUEUE, "other"], 4)
    assert sorted(m["marker"] for m in received) == ["high", "low", "other queue", "plain"]
    ours = [m["marker"] for m in received if m["marker"] != "other queue"]
    assert ours.index("low") == 2  # priority 9 is kombu's lowest
    assert where(broker.url, "") == []  # nothing left in hand, unacked or queued


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_redis_stopped_again_and_again_under_load_keeps_every_task(broker: AofRedis) -> None:
    """A producer publishes without pause (again until Redis took it), a guarded consumer
    takes, records and acknowledges; Redis is stopped with SIGTERM and started on its file
    60 times, 0.7 s apart. Every published task is delivered without waiting for a
    visibility timeout (some twice: a publish cut by the stop that reached Redis is
    published again, a cut record is delivered once more; tasks are idempotent)."""
    published: set[str] = set()
    received: set[str] = set()
    stop = threading.Event()

    def produce() -> None:
        marker = str(uuid.uuid4())
        while not stop.is_set():
            try:
                with Connection(broker.url, transport_options={"socket_timeout": 2}) as c:
                    producer = Producer(c.channel())
                    while not stop.is_set():
                        producer.publish({"marker": marker}, routing_key=QUEUE, retry=False)
                        published.add(marker)
                        marker = str(uuid.uuid4())
            except c.connection_errors:
                time.sleep(0.05)

    def on_message(body: Any, message: Message) -> None:
        received.add(body["marker"])
        message.ack()

    def consume_all() -> None:
        options = {**QUICK_HANDOVER, "socket_timeout": 2}
        while not (stop.is_set() and received >= published):
            try:
                with Connection(broker.url, transport=GuardedRedisTransport,
                                transport_options=options) as c:  # fmt: skip
                    with Consumer(c.channel(), [Queue(QUEUE)], callbacks=[on_message]):
                        while not (stop.is_set() and received >= published):
                            try:
                                c.drain_events(timeout=0.5)
                            except TimeoutError:
                                pass
            except c.connection_errors:
                time.sleep(0.05)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume_all)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(60):
            time.sleep(0.7)
            broker.stop()
            time.sleep(0.2)
            broker.start()
    finally:
        stop.set()
        threads[0].join(30)
    deadline = time.monotonic() + 60
    while not received >= published and time.monotonic() < deadline:
        time.sleep(0.5)
    threads[1].join(5)
    missing = sorted(published - received)
    assert missing == [], {marker: where(broker.url, marker) for marker in missing}
    assert len(published) > 1000
