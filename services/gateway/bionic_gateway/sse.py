"""Checking an OpenAI event stream while it is relayed: every event's data is JSON or
`[DONE]`, and the stream ends with `[DONE]`.

The check splits the stream into events as the bytes come and lets each complete event
through at once, byte for byte; only the unfinished end of an event waits (a client cannot
use half an event anyway), up to `MAX_EVENT_BYTES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bionic_gateway.errors import error_body

MAX_EVENT_BYTES = 1 << 20
DONE = b"[DONE]"


class MalformedStream(Exception):
    """The upstream's event stream is not one an OpenAI client can read."""


def error_event(status: int, message: str) -> bytes:
    """An OpenAI-shaped error as the last event of a stream, then `[DONE]`."""
    return f"data: {json.dumps(error_body(status, message))}\n\ndata: [DONE]\n\n".encode()


class EventStream:
    """Feeds the upstream's bytes through, event by event; hands each JSON event's data to
    `on_event` and raises `MalformedStream` for data that is not JSON or `[DONE]`."""

    def __init__(self, on_event: Callable[[Any], None]) -> None:
        self._on_event = on_event
        self._held = b""  # the event that has not ended yet
        self._scanned = 0  # where in it the next line starts
        self._data: list[bytes] = []  # its data lines so far
        self.done = False  # `[DONE]` came: what follows is relayed unchecked

    def feed(self, chunk: bytes) -> bytes:
        """The bytes that may go to the client now: every event that ended."""
        if self.done:
            return chunk
        held = self._held + chunk if self._held else chunk
        released = 0
        while not self.done:
            newline = held.find(b"\n", self._scanned)
            if newline < 0:
                break
            line = held[self._scanned : newline].rstrip(b"\r")
            self._scanned = newline + 1
            if not line:
                self._dispatch()
                released = self._scanned
            elif line.startswith(b"data:"):
                self._data.append(line[5:].removeprefix(b" "))
        if self.done:
            released = len(held)
        self._held = held[released:]
        self._scanned -= released
        if len(self._held) > MAX_EVENT_BYTES:
            raise MalformedStream(f"an event longer than {MAX_EVENT_BYTES} bytes")
        return held[:released] if released < len(held) else held

    def end(self) -> None:
        """The upstream's body ended: it must have said `[DONE]`."""
        if not self.done:
            raise MalformedStream("the stream ended without [DONE]")

    def _dispatch(self) -> None:
        if not self._data:  # comments, keep-alives, fields without data
            return
        data = b"\n".join(self._data)
        self._data = []
        if data.strip() == DONE:
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise MalformedStream("an event whose data is not JSON") from exc
        self._on_event(event)
