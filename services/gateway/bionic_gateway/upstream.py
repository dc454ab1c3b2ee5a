"""The upstream OpenAI-compatible API, and relaying its answers back to the client."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from bionic_gateway.auth import Caller
from bionic_gateway.config import GatewaySettings
from bionic_gateway.errors import OpenAIError, error_body

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


class Upstream:
    def __init__(self, settings: GatewaySettings) -> None:
        self.base_url = settings.upstream_base_url.rstrip("/")
        self._key = settings.upstream_api_key
        self._passthrough = settings.upstream_key_passthrough
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout, connect=10.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
        )

    def headers(self, caller: Caller | None = None) -> dict[str, str]:
        """The upstream's authorization: the server's key, or the caller's own in pass-through."""
        key = caller.key if self._passthrough and caller is not None else self._key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

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

        A timeout (the client's, or `timeout` seconds) becomes 504, an unreachable upstream
        502 (OpenAI-shaped errors).
        """
        request = self.client.build_request(
            method,
            self.url(path) + (f"?{params}" if params else ""),
            json=json_body,
            content=content,
            headers={**(headers or {}), **self.headers(caller)},
            timeout=httpx.Timeout(timeout) if timeout else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            return await self.client.send(request, stream=True)
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
    reply: httpx.Response, on_chunk: Callable[[bytes], None] | None = None, sse: bool = False
) -> AsyncGenerator[bytes, None]:
    """The upstream body chunk by chunk; the upstream response is closed however it ends.

    A failure mid-body cannot change the status any more: on an event stream it becomes an
    error event followed by `data: [DONE]`, otherwise the body is cut short.
    """
    try:
        async for chunk in reply.aiter_bytes():
            if on_chunk is not None:
                on_chunk(chunk)
            yield chunk
    except httpx.HTTPError as exc:
        log.warning("the upstream broke off its stream: %s", exc.__class__.__name__)
        if sse:
            status = 504 if isinstance(exc, httpx.TimeoutException) else 502
            error = error_body(status, f"the upstream broke off its stream: {exc}")
            yield f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
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
