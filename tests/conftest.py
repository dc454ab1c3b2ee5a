"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support.recording_upstream import RecordingUpstream
from tests.support.stack import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis for broker tests, its test database emptied first."""
    with redis_server() as url:
        redis.Redis.from_url(url).flushdb()
        yield url


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    """A recording upstream (tests/support/recording_upstream.py) for one test module."""
    recorder = RecordingUpstream().start()
    yield recorder
    recorder.stop()
