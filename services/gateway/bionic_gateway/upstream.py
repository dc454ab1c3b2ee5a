"""The upstream OpenAI-compatible API, and relaying its answers back to the client."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from yarl import URL

from bionic_gateway.auth import Caller
from bionic_gateway.config import GatewaySettings
from bionic_gateway.errors import OpenAIError
from bionic_gateway.sse import EventStream, MalformedStream, error_event

log = logging.getLogger(__name__)

# Hop-by-hop and length headers are the gateway's own business, not the upstream's. Bodies
# are relayed decoded, so the upstream's content-encoding does not apply to them either.
DROP_RESPONSE_HEADERS = {
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "server",
    "date",
    "x-request-id",
}
# Client headers that must not reach the upstream: ours, hop-by-hop, or the client's key.
DROP_REQUEST_HEADERS = {
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "accept-encoding",
    "cookie",
    "x-api-key",
    "api-key",
}

# What failing to reach the upstream or to read its answer raises; timeouts are among them.
UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError)
# Failures of a kept-alive connection that the upstream closed before it read the request.
STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
# Requests aiohttp itself sends once more after such a failure (RFC 9112, 9.3.1).
IDEMPOTENT_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}
NO_AUTO_CONTENT_TYPE = ("Content-Type",)
CONNECT_TIMEOUT = 10.0
MAX_CONNECTIONS = 512
PARSED_URLS = 64  # upstream URLs kept parsed (chat's, and the first pass-through paths)


class ConnectionTrace:
    """Follows one request through the connection pool: did it go out on a kept-alive
    connection?"""

    def __init__(self) -> None:
        self.reused = False


async def _connection_reused(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceConnectionReuseconnParams,
) -> None:
    if isinstance(context.trace_request_ctx, ConnectionTrace):
        context.trace_request_ctx.reused = True


def environment_proxy(url: str) -> str | None:
    """The proxy that HTTPS_PROXY / HTTP_PROXY / ALL_PROXY give for `url`, unless NO_PROXY
    exempts its host: read once, as the upstream's URL does not change."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class Upstream:
    def __init__(self, settings: GatewaySettings) -> None:
        self.base_url = settings.upstream_base_url.rstrip("/")
        self._key = settings.upstream_api_key
        self._passthrough = settings.upstream_key_passthrough
        traces = aiohttp.TraceConfig()
        traces.on_connection_reuseconn.append(_connection_reused)
        keepalive = settings.upstream_keepalive_expiry
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS,
                keepalive_timeout=keepalive if keepalive else None,
                force_close=not keepalive,
            ),
            # Each read (the answer's head, then every chunk) may take upstream_timeout, so
            # a long stream lasts as long as the model keeps writing; waiting for a free
            # connection of the pool and connecting count as connecting.
            timeout=self._timeouts(settings.upstream_timeout),
            # One client serves every tenant: a cookie the upstream set for one must never
            # be sent for another, so none is kept.
            cookie_jar=aiohttp.DummyCookieJar(),
            proxy=environment_proxy(self.base_url),
            trace_configs=[traces],
        )
        self._parsed: dict[str, URL] = {}

    @staticmethod
    def _timeouts(read: float) -> aiohttp.ClientTimeout:
        connect = min(CONNECT_TIMEOUT, read)
        return aiohttp.ClientTimeout(total=None, connect=read, sock_connect=connect, sock_read=read)

    def headers(self, caller: Caller | None = None) -> dict[str, str]:
        """The upstream's authorization: the server's key, or the caller's own in pass-through."""
        key = caller.key if self._passthrough and caller is not None else self._key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _parsed_url(self, path: str, params: str) -> URL:
        """The URL of `path`, parsed once for the first few paths without a query."""
        if params:
            return URL(f"{self.url(path)}?{params}")
        found = self._parsed.get(path)
        if found is None:
            found = URL(self.url(path))
            if len(self._parsed) < PARSED_URLS:
                self._parsed[path] = found
        return found

    async def send(
        self,
        method: str,
        path: str,
        caller: Caller | None,
        *,
        json_body: Any = None,
        content: AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        params: str = "",
        timeout: float | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return the response with its body still unread.

        A request without a streamed body is sent once more when a kept-alive connection
        turns out to be closed before any answer came: the upstream closed it as idle just as
        the request went out (aiohttp does this itself for idempotent methods, this method
        for the others: POST). A timeout (the client's, or `timeout` seconds) becomes 504, an
        unreachable upstream 502 (OpenAI-shaped errors).
        """
        url = self._parsed_url(path, params)
        sent_headers = {**(headers or {}), **self.headers(caller)}
        data: bytes | AsyncIterator[bytes] | None = content
        if json_body is not None:
            data = json.dumps(
                json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            sent_headers["Content-Type"] = "application/json"
        timeouts = self._timeouts(timeout) if timeout else self.client.timeout
        # A relayed body goes as it came: with no Content-Type when the client sent none,
        # where aiohttp would label it application/octet-stream.
        skip = NO_AUTO_CONTENT_TYPE if content is not None else None

        async def attempt(trace: ConnectionTrace | None) -> aiohttp.ClientResponse:
            return await self.client.request(
                method,
                url,
                data=data,
                headers=sent_headers,
                allow_redirects=False,
                skip_auto_headers=skip,
                timeout=timeouts,
                trace_request_ctx=trace,
            )

        try:
            first = ConnectionTrace()
            try:
                return await attempt(first)
            except STALE_CONNECTION_ERRORS as exc:
                if content is not None or not first.reused or method in IDEMPOTENT_METHODS:
                    raise
                log.info("the upstream closed a kept-alive connection (%r): sending again", exc)
            return await attempt(None)
        except TimeoutError as exc:
            raise OpenAIError(504, "the upstream did not answer in time", code="timeout") from exc
        except aiohttp.ClientError as exc:
            raise OpenAIError(502, f"the upstream is unreachable: {exc}") from exc

    async def read(self, reply: aiohttp.ClientResponse) -> bytes:
        """The whole body of a response from `send`; a stalled body becomes 504."""
        try:
            return await reply.read()
        except TimeoutError as exc:
            raise OpenAIError(504, "the upstream did not answer in time", code="timeout") from exc
        except aiohttp.ClientError as exc:
            raise OpenAIError(502, f"the upstream broke off its answer: {exc}") from exc
        finally:
            reply.release()

    async def close(self) -> None:
        await self.client.close()


def passthrough_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() not in DROP_RESPONSE_HEADERS}


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in DROP_REQUEST_HEADERS}


async def relay_body(
    reply: aiohttp.ClientResponse, sse: bool = False, events: EventStream | None = None
) -> AsyncGenerator[bytes, None]:
    """The upstream body chunk by chunk, through `events` when the stream is checked; the
    upstream response is closed however it ends.

    A failure mid-body cannot change the status any more: on an event stream it becomes an
    error event followed by `data: [DONE]`, otherwise the body is cut short.
    """
    try:
        async for chunk in reply.content.iter_any():
            relayed = chunk if events is None else events.feed(chunk)
            if relayed:
                yield relayed
        if events is not None:
            events.end()
    except UPSTREAM_ERRORS as exc:
        log.warning("the upstream broke off its stream: %s", exc.__class__.__name__)
        if sse:
            status = 504 if isinstance(exc, TimeoutError) else 502
            yield error_event(status, f"the upstream broke off its stream: {exc}")
    except MalformedStream as exc:
        log.warning("the upstream sent a malformed event stream: %s", exc)
        yield error_event(502, "the upstream sent a malformed event stream")
    finally:
        reply.release()  # back to the pool when read to the end, else closed


class RelayResponse(StreamingResponse):
    """A streamed answer whose client leaving cancels it at once (and so the upstream call).

    Starlette notices a gone client only when a write fails, which for a slow model can be
    long after; this response listens for the disconnect while it streams.
    """

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, media_type, background)
        self._body = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        left = False

        async def watch() -> None:  # one task, where a task group took ~50 µs per answer
            nonlocal left
            await self.listen_for_disconnect(receive)
            left = True
            streaming.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not left or streaming.uncancel():  # cancelled from outside as well
                raise
        finally:
            watcher.cancel()
            await self._body.aclose()  # the upstream call, cancelled if the client left
        if self.background is not None:
            await self.background()


def upstream_response(
    reply: aiohttp.ClientResponse, body: bytes, headers: Mapping[str, str]
) -> Response:
    """The upstream's answer as it was: status, body and headers (retry-after included)."""
    return Response(body, reply.status, {**passthrough_headers(reply), **headers})
