"""The upstream OpenAI-compatible API, and relaying its answers back to the client."""

from __future__ import annotations

import http.cookiejar
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import anyio
import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

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


# Failures of a kept-alive connection that the upstream closed before it read the request.
STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
PARSED_URLS = 64  # upstream URLs kept parsed (chat's, and the first pass-through paths)


class NoCookies(httpx.Cookies):
    """A client's cookie store that keeps nothing the upstream sets: one client serves every
    tenant, so a cookie set for one must never be sent for another. (A cookie policy that
    refuses every cookie does the same after building two urllib objects per response.)"""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class ConnectionTrace:
    """Follows one request through httpx's pool: did it open a new connection?"""

    def __init__(self) -> None:
        self.opened = False

    async def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event.startswith("connection.connect_"):
            self.opened = True


class Upstream:
    def __init__(self, settings: GatewaySettings) -> None:
        self.base_url = settings.upstream_base_url.rstrip("/")
        self._key = settings.upstream_api_key
        self._passthrough = settings.upstream_key_passthrough
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout, connect=10.0),
            limits=httpx.Limits(
                max_connections=512,
                max_keepalive_connections=64,
                keepalive_expiry=settings.upstream_keepalive_expiry,
            ),
        )
        # One client serves every tenant: a cookie the upstream set for one must never be
        # sent for another. httpx has no public way to give a client its own Cookies class,
        # so the jar also refuses every cookie: the guard that still holds should a later
        # httpx keep its cookies elsewhere than `_cookies`.
        self.client._cookies = NoCookies()
        self.client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._parsed: dict[str, httpx.URL] = {}

    def headers(self, caller: Caller | None = None) -> dict[str, str]:
        """The upstream's authorization: the server's key, or the caller's own in pass-through."""
        key = caller.key if self._passthrough and caller is not None else self._key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _parsed_url(self, path: str, params: str) -> httpx.URL:
        """The URL of `path`, parsed once for the first few paths without a query."""
        if params:
            return httpx.URL(f"{self.url(path)}?{params}")
        found = self._parsed.get(path)
        if found is None:
            found = httpx.URL(self.url(path))
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
    ) -> httpx.Response:
        """Send a request and return the response with its body still unread.

        A request without a streamed body is sent once more when a kept-alive connection
        turns out to be closed before any answer came: the upstream closed it as idle just as
        the request went out. A timeout (the client's, or `timeout` seconds) becomes 504, an
        unreachable upstream 502 (OpenAI-shaped errors).
        """

        url = self._parsed_url(path, params)

        def build(trace: ConnectionTrace | None) -> httpx.Request:
            return self.client.build_request(
                method,
                url,
                json=json_body,
                content=content,
                headers={**(headers or {}), **self.headers(caller)},
                timeout=httpx.Timeout(timeout) if timeout else httpx.USE_CLIENT_DEFAULT,
                extensions={"trace": trace.trace} if trace else None,
            )

        try:
            first = ConnectionTrace()
            try:
                return await self.client.send(build(first), stream=True)
            except STALE_CONNECTION_ERRORS as exc:
                if content is not None or first.opened:
                    raise
                log.info("the upstream closed a kept-alive connection (%r): sending again", exc)
            return await self.client.send(build(None), stream=True)
        except httpx.TimeoutException as exc:
            raise OpenAIError(504, "the upstream did not answer in time", code="timeout") from exc
        except httpx.TransportError as exc:
            raise OpenAIError(502, f"the upstream is unreachable: {exc}") from exc

    async def read(self, reply: httpx.Response) -> bytes:
        """The whole body of a response from `send`; a stalled body becomes 504."""
        try:
            return await reply.aread()
        except httpx.TimeoutException as exc:
            raise OpenAIError(504, "the upstream did not answer in time", code="timeout") from exc
        except httpx.TransportError as exc:
            raise OpenAIError(502, f"the upstream broke off its answer: {exc}") from exc
        finally:
            await reply.aclose()

    async def close(self) -> None:
        await self.client.aclose()


def passthrough_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() not in DROP_RESPONSE_HEADERS}


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in DROP_REQUEST_HEADERS}


async def relay_body(
    reply: httpx.Response, sse: bool = False, events: EventStream | None = None
) -> AsyncGenerator[bytes, None]:
    """The upstream body chunk by chunk, through `events` when the stream is checked; the
    upstream response is closed however it ends.

    A failure mid-body cannot change the status any more: on an event stream it becomes an
    error event followed by `data: [DONE]`, otherwise the body is cut short.
    """
    try:
        async for chunk in reply.aiter_bytes():
            relayed = chunk if events is None else events.feed(chunk)
            if relayed:
                yield relayed
        if events is not None:
            events.end()
    except httpx.HTTPError as exc:
        log.warning("the upstream broke off its stream: %s", exc.__class__.__name__)
        if sse:
            status = 504 if isinstance(exc, httpx.TimeoutException) else 502
            yield error_event(status, f"the upstream broke off its stream: {exc}")
    except MalformedStream as exc:
        log.warning("the upstream sent a malformed event stream: %s", exc)
        yield error_event(502, "the upstream sent a malformed event stream")
    finally:
        with anyio.CancelScope(shield=True):
            await reply.aclose()


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
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()
        if self.background is not None:
            await self.background()


def upstream_response(reply: httpx.Response, body: bytes, headers: Mapping[str, str]) -> Response:
    """The upstream's answer as it was: status, body and headers (retry-after included)."""
    return Response(body, reply.status_code, {**passthrough_headers(reply), **headers})
