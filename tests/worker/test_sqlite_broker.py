"""The SQLite broker's leases, directly with kombu: an acknowledged message is gone from
the table, a message whose consumer vanished comes back after the visibility timeout."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from kombu import Connection

from bionic_worker import broker

VISIBILITY = 1.0


def connect(path: Path) -> Connection:
    settings = broker.connection_settings(f"sqla+sqlite:///{path}", VISIBILITY)
    return Connection(
        settings["broker_url"],
        transport=settings["broker_transport"],
        transport_options=settings["broker_transport_options"],
    )


def rows(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT id, visible FROM kombu_message ORDER BY id"))


def test_acknowledged_messages_leave_the_table(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    with connect(path) as conn:
        queue = conn.SimpleQueue("q")
        for i in range(3):
            queue.put({"n": i})
        for _ in range(3):
            queue.get(timeout=5).ack()
        queue.close()
    assert rows(path) == []


def test_a_message_taken_by_a_consumer_that_died_is_delivered_again(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    with connect(path) as conn:
        conn.SimpleQueue("q").put({"n": 1})
    dead = connect(path)
    taken = dead.SimpleQueue("q").get(timeout=5)  # taken, never acknowledged: "killed"
    assert taken.payload == {"n": 1}
    assert [visible for _, visible in rows(path)] == [0]
    time.sleep(VISIBILITY + 0.5)
    with connect(path) as conn:
        queue = conn.SimpleQueue("q")
        again = queue.get(timeout=broker.RESTORE_EVERY + 5)
        assert again.payload == {"n": 1}
        again.ack()
        queue.close()
    assert rows(path) == []
