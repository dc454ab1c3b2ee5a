"""Per-request context: a request id on every log line and response, and an access log."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bionic_gateway.metrics import GatewayMetrics

log = logging.getLogger("bionic_gateway.access")

REQUEST_ID_HEADER = "x-request-id"
_HEADER = REQUEST_ID_HEADER.encode()
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def current_request_id() -> str:
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def setup_request_logging() -> None:
    """Put the request id on every line the root handlers write."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
        formatter = handler.formatter
        if formatter is not None and formatter._fmt and "request_id" not in formatter._fmt:
            handler.setFormatter(
                logging.Formatter(
                    formatter._fmt.replace("%(message)s", "request_id=%(request_id)s %(message)s")
                )
            )


class RequestContext:
    """Gives each request an id (the client's `x-request-id` when sane), returns it as a
    header, counts the request and logs one access line: method, route, status, time."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers", ()):
            if name == _HEADER:  # the last one counts
                given = value.decode("latin-1")
        request_id = given if _VALID_ID.match(given) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER]
                headers.append((_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.metrics.request(scope["method"], path, status)
            log.info(
                "method=%s route=%s status=%d ms=%.1f",
                scope["method"],
                path,
                status,
                elapsed * 1000,
            )
            _request_id.reset(token)
