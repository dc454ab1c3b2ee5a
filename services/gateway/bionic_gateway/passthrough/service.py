"""Relay a request to the upstream as it is and its answer back as it comes, both streamed.

The request body is bounded by the gateway's body limit; the answer is relayed chunk by
chunk without being held in memory.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bionic_gateway.auth import Caller
from bionic_gateway.upstream import (
    RelayResponse,
    Upstream,
    forwarded_headers,
    passthrough_headers,
    relay_body,
)


class PassthroughService:
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def relay(self, request: Request, path: str, caller: Caller) -> Response:
        has_body = request.method not in ("GET", "HEAD", "OPTIONS", "DELETE") or bool(
            request.headers.get("content-length") or request.headers.get("transfer-encoding")
        )
        reply = await self._upstream.send(
            request.method,
            path,
            caller,
            content=request.stream() if has_body else None,
            headers=forwarded_headers(request.headers),
            params=request.url.query,
        )
        sse = reply.headers.get("content-type", "").startswith("text/event-stream")
        return RelayResponse(
            relay_body(reply, sse=sse),
            status_code=reply.status,
            headers=passthrough_headers(reply),
        )
