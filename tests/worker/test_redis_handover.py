"""A task Redis is handing to the worker when it goes away is not lost.

Kombu's stock Redis transport takes a message with BRPOP (off its list, in the append-only
file) and records it as unacknowledged with a second command once the reply arrived.
Each test cuts that hand-over on a real redis-server, the two ways a stopped Redis cuts it:
the reply of the take never arrives, or Redis is gone when the worker records what it took.
The stock transport loses the task both ways; the worker's `GuardedRedisTransport` keeps
it in Redis and delivers it again."""

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
    pytest.param(kombu_redis.Transport, False, id="stock-loses"),
    pytest.param(GuardedRedisTransport, True, id="guarded-keeps"),
]
QUICK_HANDOVER = {"handover_timeout": 0.5}  # a cut hand-over is put back 0.5 s later


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[AofRedis]:
    server = AofRedis(tmp_path)
    server.start()
    yield server
    server.stop()


class CuttingProxy:
    """A TCP proxy in front of Redis that drops the first reply carrying `marker` and
    closes that connection: Redis ran the command, its client never hears the answer (as
    when Redis stops before it writes its replies out, or the network drops)."""

    def __init__(self, redis_port: int, marker: bytes) -> None:
        self.redis_port = redis_port
        self.marker = marker
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
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and self.marker in data and not self.cut.is_set():
                    self.cut.set()
                    break
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
) -> list[Any]:
    """Receive and acknowledge `count` messages (or what came within `wait` seconds)."""
    received: list[Any] = []

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
    try:
        with pytest.raises(redis.ConnectionError):
            consume(broker.url, [QUEUE], 1, StopsRedisOnDelivery)
    finally:
        broker.start()
    if not keeps:
        assert where(broker.url, marker) == []
        return
    assert where(broker.url, marker) == ["unacked_handover"]
    assert consume(broker.url, [QUEUE], 1, options=QUICK_HANDOVER) == [{"marker": marker}]
    assert where(broker.url, marker) == []


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
