"""A memory-augmented chat turn: recall, inject, call the upstream, queue what to store."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response

from bionic_common.memory_types import Scope
from bionic_gateway.auth import Caller
from bionic_gateway.chat.prompt import MemoryPrompt
from bionic_gateway.chat.protocol import ChatCompletionRequest
from bionic_gateway.errors import OpenAIError
from bionic_gateway.metrics import GatewayMetrics
from bionic_gateway.queue import TaskQueue
from bionic_gateway.recall import Recaller, TurnMemory
from bionic_gateway.requests import current_request_id
from bionic_gateway.sse import EventStream
from bionic_gateway.upstream import (
    RelayResponse,
    Upstream,
    passthrough_headers,
    relay_body,
    upstream_response,
)

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
MEMORY_HEADER = "x-bionic-memory"
OWN_FIELDS = ("bionic_memory",)


@dataclass(slots=True)
class ReplyCollector:
    """Reassembles the assistant's text and usage from the events of a relayed stream."""

    parts: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None

    def event(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return  # usage-only or not a completion chunk
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            self.parts.append(content)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ChatService:
    def __init__(
        self,
        recaller: Recaller,
        prompt: MemoryPrompt,
        upstream: Upstream,
        queue: TaskQueue,
        metrics: GatewayMetrics,
    ) -> None:
        self._recaller = recaller
        self._prompt = prompt
        self._upstream = upstream
        self._queue = queue
        self._metrics = metrics

    async def complete(
        self,
        body: dict[str, Any],
        request: ChatCompletionRequest,
        caller: Caller,
        headers: Mapping[str, str],
    ) -> Response:
        started = time.perf_counter()
        request_id = current_request_id()
        scope = Scope(tenant=caller.tenant, user=request.user or DEFAULT_USER)
        text = request.last_user_text()
        turn = await self._recaller.turn(scope, text, request.controls(headers), request_id)
        if turn.degraded and turn.stores:  # the store recall would have done, for later
            said_at = time.time()
            turn.when_not_stored(
                lambda: self._queue.remember_turn(scope, text, request_id, said_at)
            )
        upstream_body = {k: v for k, v in body.items() if k not in OWN_FIELDS}
        upstream_body["messages"] = self._prompt.inject(body["messages"], turn.recalled)

        sent = time.perf_counter()
        reply = await self._upstream.send(
            "POST", "chat/completions", caller, json_body=upstream_body
        )
        first_byte = time.perf_counter() - sent
        self._metrics.stage["upstream_first_byte"].observe(first_byte)
        stream = bool(request.stream)
        self._metrics.turn(turn.outcome, stream)
        out_headers = {MEMORY_HEADER: turn.header()}
        if reply.status != 200:
            self._metrics.upstream_errors.labels(str(reply.status)).inc()
        if reply.status != 200 or not stream:
            content = await self._upstream.read(reply)
            total = time.perf_counter() - started
            self._metrics.stage["total"].observe(total)
            out_headers["server-timing"] = _server_timing(turn, first_byte, total)
            if reply.status == 200:
                answer, usage = _reply_parts(content)
                self._count_tokens(usage)
                if answer and turn.stores:
                    self._queue.remember_exchange(scope, answer, request_id)
            return upstream_response(reply, content, out_headers)

        collector = ReplyCollector()
        events = EventStream(collector.event)

        async def finish() -> None:  # after the last byte, or after the client left
            self._metrics.stage["total"].observe(time.perf_counter() - started)
            self._count_tokens(collector.usage)
            if events.done and collector.text and turn.stores:
                self._queue.remember_exchange(scope, collector.text, request_id)

        out_headers["server-timing"] = _server_timing(turn, first_byte, None)
        return RelayResponse(
            relay_body(reply, sse=True, events=events),
            headers={**passthrough_headers(reply), **out_headers},
            background=BackgroundTask(finish),
        )

    def _count_tokens(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        for kind, counter in self._metrics.token_kinds.items():
            value = usage.get(f"{kind}_tokens")
            if isinstance(value, int) and value > 0:
                counter.inc(value)


def _reply_parts(content: bytes) -> tuple[str, dict[str, Any] | None]:
    """The first choice's text and the usage of a non-streamed completion; 502 for an
    answer that is not a JSON object."""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise OpenAIError(502, "the upstream answered with something that is not JSON")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    try:
        text = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return "", usage
    return (text if isinstance(text, str) else ""), usage


def _server_timing(turn: TurnMemory, first_byte: float, total: float | None) -> str:
    """Stage times in ms (the W3C Server-Timing header), for clients and benchmarks."""
    stages = [
        ("embed", turn.embed_seconds),
        ("recall", turn.recall_seconds),
        ("upstream", first_byte),
    ]
    if total is not None:
        stages.append(("total", total))
    return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in stages)
