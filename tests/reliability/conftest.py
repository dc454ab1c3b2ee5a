"""Fixtures of the reliability suite: a recording upstream, and a stack started by the
launcher in front of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.recording_upstream import Discard, RecordingUpstream


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream().start()
    upstream.requests = Discard()  # thousands of turns: record nothing
    yield upstream
    upstream.stop()
