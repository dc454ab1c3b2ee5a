"""The gateway's upstream client against a server that closes kept-alive connections as
requests arrive on them: the race of an upstream's keep-alive timeout, made deterministic."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.background import BackgroundTask

from bionic_gateway.config import GatewaySettings
from bionic_gateway.errors import OpenAIError
from bionic_gateway.upstream import PARSED_URLS, RelayResponse, Upstream, environment_proxy
from tests.reliability.faulty_upstream import (
    KEPT_ALIVE_CONTENT,
    KeepAliveCloser,
    SocketUpstream,
    read_request,
)
from tests.support.recording_upstream import RecordingUpstream

CHAT = {"model": "closer", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def closer() -> Iterator[KeepAliveCloser]:
    server = KeepAliveCloser().start()
    yield server
    server.stop()


async def chat(upstream: Upstream) -> bytes:
    reply = await upstream.send("POST", "chat/completions", None, json_body=CHAT)
    assert reply.status == 200
    return await upstream.read(reply)


async def test_a_request_that_crosses_the_upstreams_close_is_sent_again(
    closer: KeepAliveCloser,
) -> None:
    upstream = Upstream(GatewaySettings(upstream_base_url=closer.base_url))
    try:
        assert KEPT_ALIVE_CONTENT.encode() in await chat(upstream)
        # The same connection again: the upstream closes it on this request, unanswered.
        assert KEPT_ALIVE_CONTENT.encode() in await chat(upstream)
    finally:
        await upstream.close()
    assert len(closer.requests) == 3 and closer.connections == 2  # one retry, a new connection


async def test_an_idempotent_request_that_crosses_the_close_is_sent_again(
    closer: KeepAliveCloser,
) -> None:
    """aiohttp's own retry (RFC 9112, 9.3.1), which `send` leaves GET to: once."""
    upstream = Upstream(GatewaySettings(upstream_base_url=closer.base_url))
    try:
        for _ in range(2):
            reply = await upstream.send("GET", "models", None)
            assert reply.status == 200
            await upstream.read(reply)
        closer.close_all = True
        with pytest.raises(OpenAIError) as failed:
            await upstream.send("GET", "models", None)
    finally:
        await upstream.close()
    assert failed.value.status == 502
    assert len(closer.requests) == 5 and closer.connections == 3  # the 2nd and 3rd sent twice


async def test_an_upstream_that_keeps_closing_is_502_after_one_retry(
    closer: KeepAliveCloser,
) -> None:
    upstream = Upstream(GatewaySettings(upstream_base_url=closer.base_url))
    try:
        await chat(upstream)
        closer.close_all = True
        with pytest.raises(OpenAIError) as failed:
            await chat(upstream)
    finally:
        await upstream.close()
    assert failed.value.status == 502
    assert failed.value.message.startswith("the upstream is unreachable")
    assert len(closer.requests) == 3 and closer.connections == 2


async def test_a_new_connection_closed_on_is_not_retried(closer: KeepAliveCloser) -> None:
    closer.close_all = True
    upstream = Upstream(GatewaySettings(upstream_base_url=closer.base_url))
    try:
        with pytest.raises(OpenAIError) as failed:
            await chat(upstream)
    finally:
        await upstream.close()
    assert failed.value.status == 502 and len(closer.requests) == closer.connections == 1


async def test_a_streamed_body_is_never_sent_twice(closer: KeepAliveCloser) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a streamed upload"

    upstream = Upstream(GatewaySettings(upstream_base_url=closer.base_url))
    try:
        await chat(upstream)
        with pytest.raises(OpenAIError) as failed:
            await upstream.send("POST", "files", None, content=body())
    finally:
        await upstream.close()
    assert failed.value.status == 502
    assert len(closer.requests) == 2 and closer.connections == 1


class CookieSetter(SocketUpstream):
    """Sets a cookie on every answer (one a connection) and records the request heads."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head, _ = await read_request(reader)
            self.requests.append(head)
            writer.write(
                b"HTTP/1.1 200 OK\r\nset-cookie: session=tenant-a; Path=/\r\n"
                b"connection: close\r\ncontent-length: 2\r\n\r\n{}"
            )
            await writer.drain()
        writer.close()


async def test_cookies_the_upstream_sets_are_not_sent_for_the_next_caller() -> None:
    server = CookieSetter().start()
    upstream = Upstream(GatewaySettings(upstream_base_url=server.base_url))
    try:
        for _ in range(2):
            reply = await upstream.send("GET", "models", None)
            assert reply.headers["set-cookie"].startswith("session=")
            await upstream.read(reply)
    finally:
        await upstream.close()
        server.stop()
    assert len(server.requests) == 2
    assert all(b"cookie:" not in head.lower() for head in server.requests)


async def test_every_path_reaches_its_url_past_the_parsed_ones(
    upstream: RecordingUpstream,
) -> None:
    """The first PARSED_URLS paths are parsed once and kept, later ones each time, and a
    query is never kept: each request still goes where its path and query say."""
    client = Upstream(GatewaySettings(upstream_base_url=upstream.base_url))
    sent = [(f"files/f{n}", "") for n in range(PARSED_URLS + 2)]
    sent += [("files/f0", "limit=2"), ("files/f0", "limit=3"), ("/files/f1", "")]
    try:
        for path, params in sent + sent[:2]:
            reply = await client.send("GET", path, None, params=params)
            assert reply.status == 200
            await client.read(reply)
    finally:
        await client.close()
    seen = [(r["body"]["path"], r["body"]["query"]) for r in upstream.requests]
    assert seen == [(p.lstrip("/"), q) for p, q in sent + sent[:2]]


def test_the_environments_proxy_is_used_unless_no_proxy_exempts_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert environment_proxy("https://api.example.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal.test")
    assert environment_proxy("https://api.example.com/v1") == "http://proxy.test:3128"
    assert environment_proxy("http://api.example.com/v1") is None  # no HTTP_PROXY
    assert environment_proxy("https://llm.internal.test/v1") is None
    assert environment_proxy("https://localhost:8080/v1") is None


class Relay:
    """A RelayResponse over `chunks` events (None: endless), served as ASGI; the test says
    when the client leaves."""

    def __init__(self, chunks: int | None) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed = self.finished = False
        self.disconnect = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            try:
                for _ in itertools.count() if chunks is None else range(chunks):
                    yield b"data: {}\n\n"
                    await asyncio.sleep(0.001)
            finally:
                self.closed = True

        async def finish() -> None:
            self.finished = True

        self.response = RelayResponse(body(), background=BackgroundTask(finish))

    async def receive(self) -> dict[str, object]:
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, object]) -> None:
        self.sent.append(message)

    def serve(self) -> asyncio.Task[None]:
        scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
        return asyncio.create_task(self.response(scope, self.receive, self.send))


async def test_a_relay_ends_with_its_body_or_with_the_client_and_keeps_outer_cancels() -> None:
    ended = Relay(chunks=3)
    await ended.serve()
    assert [m.get("more_body") for m in ended.sent[1:]] == [True, True, True, False]
    assert ended.closed and ended.finished

    left = Relay(chunks=None)
    serving = left.serve()
    await asyncio.sleep(0.02)
    left.disconnect.set()
    await asyncio.wait_for(serving, 5)  # returns: the client leaving is no error
    assert left.closed and left.finished and left.sent[-1]["more_body"] is True

    stopped = Relay(chunks=None)
    serving = stopped.serve()
    await asyncio.sleep(0.02)
    serving.cancel()  # a server shutting down: the cancel is not taken for the client's
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert stopped.closed and not stopped.finished
