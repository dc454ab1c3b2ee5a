"""The worker's Redis transport survives the state a lost broker leaves a channel in."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

from bionic_worker.broker import GuardedRedisChannel, GuardedRedisTransport


@pytest.mark.parametrize(
    ("channel_class", "crashes"), [(kombu_redis.Channel, True), (GuardedRedisChannel, False)]
)
def test_closing_a_channel_whose_connection_is_gone_does_not_crash(
    redis_url: str, channel_class: type[kombu_redis.Channel], crashes: bool
) -> None:
    """After a lost broker kombu closes channels whose transport let go of its connection
    details (client None) and whose pool was reset; the stock channel then dies restoring
    the messages in hand (seen in CI: "Unrecoverable error: AttributeError(... 'hostname')"),
    the guarded one leaves them in the unacked set."""
    with Connection(redis_url, transport=GuardedRedisTransport) as connection:
        transport = connection.transport
        channel = channel_class(transport)
        channel.qos._delivered["a-task"] = object()  # a message in hand, unacknowledged
        channel._pool = None
        client, transport.client = transport.client, None
        try:
            if crashes:
                with pytest.raises(AttributeError, match="hostname"):
                    channel.close()
            else:
                channel.close()
        finally:
            transport.client = client


def test_a_guarded_channel_closes_twice(redis_url: str) -> None:
    """Celery's pidbox closes its channel a second time at shutdown, when the channel has
    let go of its connection already (it ended the worker with exit 1: AttributeError)."""
    with Connection(redis_url, transport=GuardedRedisTransport) as connection:
        channel = GuardedRedisChannel(connection.transport)
        channel.close()
        channel.close()
        assert channel.connection is None


@pytest.mark.parametrize(
    ("channel_class", "error"),
    [(kombu_redis.Channel, AttributeError), (GuardedRedisChannel, redis.ConnectionError)],
)
def test_acknowledging_on_a_closed_channel_is_a_connection_error(
    redis_url: str, channel_class: type[kombu_redis.Channel], error: type[Exception]
) -> None:
    """A task that finishes after the lost connection closed its channel is acknowledged on
    that channel: the stock one raises AttributeError, which Celery does not expect and which
    ended the worker (seen in the broker outage test); the guarded one raises a connection
    error, which Celery logs ("Couldn't ack") and goes on."""
    with Connection(redis_url, transport=GuardedRedisTransport) as connection:
        channel = channel_class(connection.transport)
        qos = channel.qos
        qos._delivered["a-task"] = object()
        qos.restore_at_shutdown = False
        channel.close()
        with pytest.raises(error):
            qos.ack("a-task")
        with pytest.raises(error):
            qos.reject("a-task", requeue=True)
