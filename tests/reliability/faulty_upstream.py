"""Upstreams that misbehave at the socket level.

`KeepAliveCloser` closes kept-alive connections as requests arrive on them (the race of a
server's keep-alive timeout). `FaultyUpstream` stands in front of a RecordingUpstream.

The model name of a chat request picks the fault; any other request is piped unchanged to
the recorder, so normal turns keep working between faults:

* `reset`: reads the request, then resets the connection (RST, no answer at all);
* `garbage-http`: answers bytes that are not HTTP;
* `garbage-sse`: a 200 event stream of lines that are not JSON, then the connection closes
  (no `[DONE]`);
* `hang`: reads the request and never answers; counts the connections the gateway hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from typing import Self

from tests.support.ports import free_port

MAX_HEAD = 64 * 1024
HANG_LIMIT = 120.0  # a hung connection is closed by us after this, whatever the client does
GARBAGE_SSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    b"data: {this is not json\n\n"
    b"data: \xff\xfe\x00 binary\n\n"
    b"event: nonsense\n\n"
)
GARBAGE_HTTP = b"\x00\xffTHIS IS NOT HTTP\r\n\r\n"
KEPT_ALIVE_CONTENT = "answered on a kept-alive connection"
_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-closer",
        "object": "chat.completion",
        "created": 0,
        "model": "closer",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": KEPT_ALIVE_CONTENT},
                "finish_reason": "stop",
            }
        ],
    }
).encode()
KEPT_ALIVE_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n"
    + f"content-length: {len(_COMPLETION)}\r\n\r\n".encode()
    + _COMPLETION
)


class SocketUpstream:
    """An asyncio server on a thread of the test process, one `_serve` call per
    connection; `base_url` ends in /v1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("faulty upstream did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class FaultyUpstream(SocketUpstream):
    def __init__(self, forward_port: int) -> None:
        super().__init__()
        self.forward_port = forward_port
        self.faults: dict[str, int] = {}
        self.hung_up = 0  # hung connections the client closed

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, body = await read_request(reader)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        fault = _model(head, body)
        if fault in ("reset", "garbage-http", "garbage-sse", "hang"):
            self.faults[fault] = self.faults.get(fault, 0) + 1
            await self._fault(fault, reader, writer)
        else:
            await self._pipe(head + body, reader, writer)

    async def _fault(
        self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if fault == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if fault == "hang":
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(), HANG_LIMIT)  # EOF: the client left
                self.hung_up += 1
        else:
            writer.write(GARBAGE_SSE if fault == "garbage-sse" else GARBAGE_HTTP)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        writer.close()

    async def _pipe(
        self, request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """This one request to the recorder and its answer back; then both hang up, so the
        next request (perhaps a fault) comes on a new connection."""
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.forward_port)
        up_writer.write(_closing(request))
        with contextlib.suppress(ConnectionError):
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
        up_writer.close()
        writer.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise ConnectionError("request head too large")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head, body


def _closing(request: bytes) -> bytes:
    """The request with `connection: close` instead of any connection header it had."""
    head, _, body = request.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"connection: close"]) + b"\r\n\r\n" + body


def _model(head: bytes, body: bytes) -> str:
    if not head.startswith(b"POST ") or b"/chat/completions" not in head.split(b"\r\n")[0]:
        return ""
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return ""
    return model if isinstance(model, str) else ""


class KeepAliveCloser(SocketUpstream):
    """Answers the first request of each connection with a chat completion and keeps the
    connection alive, then closes it when the next request has arrived, without an answer:
    what a server whose keep-alive ran out does to a request that crossed its close. With
    `close_all`, every request is closed on, the first of a connection included."""

    def __init__(self) -> None:
        super().__init__()
        self.close_all = False
        self.connections = 0
        self.requests: list[bytes] = []  # the request heads, in order

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head, _ = await read_request(reader)
            self.requests.append(head)
            if not self.close_all:
                writer.write(KEPT_ALIVE_REPLY)
                await writer.drain()
                head, _ = await read_request(reader)
                self.requests.append(head)
        writer.close()
