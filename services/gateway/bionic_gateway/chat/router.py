"""POST /v1/chat/completions: parse, call the service, return what it made."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from starlette.responses import Response

from bionic_gateway.auth import Caller
from bionic_gateway.chat.protocol import ChatCompletionRequest
from bionic_gateway.chat.service import ChatService
from bionic_gateway.deps import caller, chat_service
from bionic_gateway.errors import ERROR_RESPONSES

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)


@router.post(
    "/v1/chat/completions",
    summary="Chat completion with long-term memory (stream and non-stream)",
    description=(
        "The OpenAI chat completion, passed to the upstream with the recalled memories in a "
        "system message. Every field the gateway does not use is forwarded as sent. The "
        "`x-bionic-memory` response header says what memory did: `recalled=N` (with "
        "`; read-only`), `off` or `degraded`."
    ),
    response_model=None,
    responses={
        200: {
            "description": "A chat completion, or with `stream` its chunks as server-sent events",
            "content": {"application/json": {}, "text/event-stream": {}},
        }
    },
)
async def chat_completions(
    http: Request,
    body: Annotated[ChatCompletionRequest, Body()],
    service: Annotated[ChatService, Depends(chat_service)],
    who: Annotated[Caller, Depends(caller)],
) -> Response:
    raw: dict[str, Any] = await http.json()  # forwarded as sent, unknown fields included
    return await service.complete(raw, body, who, http.headers)
