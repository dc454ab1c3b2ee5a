"""A memory-augmented chat turn: recall, inject, call the upstream, queue the reply."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from bionic_common.clients import EmbedderClient, MemoryClient
from bionic_common.memory_types import Memory, Scope
from bionic_common.tasks import ExchangeMessage
from bionic_gateway.chat.prompt import inject
from bionic_gateway.chat.protocol import ChatCompletionRequest
from bionic_gateway.config import GatewaySettings
from bionic_gateway.errors import OpenAIError, error_body
from bionic_gateway.queue import TaskQueue
from bionic_gateway.upstream import Upstream, passthrough_headers

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
MEMORY_HEADER = "x-bionic-memory"


@dataclass(slots=True)
class TurnMemory:
    scope: Scope
    recalled: list[Memory]
    degraded: bool = False

    def header(self) -> str:
        return "degraded" if self.degraded else f"recalled={len(self.recalled)}"


@dataclass(slots=True)
class ReplyCollector:
    """Reassembles the assistant's text from an SSE stream while it is relayed."""

    parts: list[str] = field(default_factory=list)
    finished: bool = False
    _buffer: bytes = b""

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._line(line.strip())

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if data == b"[DONE]":
            self.finished = True
            return
        try:
            event = json.loads(data)
            choice = event["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            return  # not a completion chunk (usage-only, keep-alive, vendor extras)
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            self.parts.append(content)
        if choice.get("finish_reason"):
            self.finished = True

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ChatService:
    def __init__(
        self,
        settings: GatewaySettings,
        embedder: EmbedderClient,
        memory: MemoryClient,
        upstream: Upstream,
        queue: TaskQueue,
    ) -> None:
        self._settings = settings
        self._embedder = embedder
        self._memory = memory
        self._upstream = upstream
        self._queue = queue

    async def complete(
        self, body: dict[str, Any], request: ChatCompletionRequest, tenant: str
    ) -> Response:
        request_id = uuid.uuid4().hex
        scope = Scope(tenant=tenant, user=request.user or DEFAULT_USER)
        turn = await self.recall(scope, request.last_user_text())
        upstream_body = {**body, "messages": inject(body["messages"], turn.recalled)}
        headers = {MEMORY_HEADER: turn.header(), "x-request-id": request_id}
        if request.stream:
            return await self._stream(upstream_body, turn, request_id, headers)
        return await self._once(upstream_body, turn, request_id, headers)

    async def recall(self, scope: Scope, text: str) -> TurnMemory:
        """Store the user's words and recall memories for them, within the deadline."""
        if not text.strip():
            return TurnMemory(scope, [])
        deadline = self._settings.memory_deadline
        try:
            async with asyncio.timeout(deadline):
                embedded = await self._embedder.embed([text], "query", timeout=deadline)
                recall = await self._memory.recall(
                    scope,
                    text,
                    embedded.vectors[0],
                    limit=self._settings.recall_limit,
                    timeout=deadline,
                )
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            reason = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
            log.warning("memory unavailable (%s): answering without it", reason)
            return TurnMemory(scope, [], degraded=True)
        return TurnMemory(scope, recall.memories)

    async def _once(
        self, body: dict[str, Any], turn: TurnMemory, request_id: str, headers: dict[str, str]
    ) -> Response:
        try:
            reply = await self._upstream.client.post(
                self._upstream.url("chat/completions"), json=body, headers=self._upstream.headers()
            )
        except httpx.TimeoutException as exc:
            raise OpenAIError(504, "the upstream model did not answer in time") from exc
        except httpx.TransportError as exc:
            raise OpenAIError(502, f"the upstream model is unreachable: {exc}") from exc
        out_headers = {**passthrough_headers(reply), **headers}
        if reply.status_code != 200:
            return Response(reply.content, reply.status_code, out_headers)
        text = _reply_text(reply.content)
        background = (
            BackgroundTask(self._queue.remember_exchange, _exchange(turn, text, request_id))
            if text
            else None
        )
        return Response(reply.content, 200, out_headers, background=background)

    async def _stream(
        self, body: dict[str, Any], turn: TurnMemory, request_id: str, headers: dict[str, str]
    ) -> Response:
        client = self._upstream.client
        upstream_request = client.build_request(
            "POST",
            self._upstream.url("chat/completions"),
            json=body,
            headers=self._upstream.headers(),
        )
        try:
            reply = await client.send(upstream_request, stream=True)
        except httpx.TimeoutException as exc:
            raise OpenAIError(504, "the upstream model did not answer in time") from exc
        except httpx.TransportError as exc:
            raise OpenAIError(502, f"the upstream model is unreachable: {exc}") from exc
        out_headers = {**passthrough_headers(reply), **headers}
        if reply.status_code != 200:
            content = await reply.aread()
            await reply.aclose()
            return Response(content, reply.status_code, out_headers)
        collector = ReplyCollector()

        async def relay() -> Any:
            try:
                async for chunk in reply.aiter_raw():
                    collector.feed(chunk)
                    yield chunk
            except httpx.HTTPError as exc:
                log.warning("upstream stream broke: %s", exc)
                error = error_body(502, f"the upstream stream broke: {exc}")
                yield f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
            finally:
                await reply.aclose()

        def remember() -> None:
            if collector.finished and collector.text:
                self._queue.remember_exchange(_exchange(turn, collector.text, request_id))

        out_headers.pop("content-type", None)
        return StreamingResponse(
            relay(),
            media_type="text/event-stream",
            headers=out_headers,
            background=BackgroundTask(remember),
        )


def _reply_text(content: bytes) -> str:
    try:
        text = json.loads(content)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    return text if isinstance(text, str) else ""


def _exchange(turn: TurnMemory, reply: str, request_id: str) -> ExchangeMessage:
    return ExchangeMessage(
        tenant=turn.scope.tenant,
        user=turn.scope.user,
        reply=reply,
        request_id=request_id,
        metadata={"request_id": request_id},
    )
