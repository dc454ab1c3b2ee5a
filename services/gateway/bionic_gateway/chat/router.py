"""POST /v1/chat/completions: parse, call the service, return what it made."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from starlette.responses import Response

from bionic_gateway.chat.protocol import ChatCompletionRequest
from bionic_gateway.chat.service import ChatService
from bionic_gateway.deps import chat_service, tenant

router = APIRouter(tags=["chat"])


@router.post(
    "/v1/chat/completions",
    summary="Chat completion with long-term memory (stream and non-stream)",
    response_model=None,
)
async def chat_completions(
    http: Request,
    body: Annotated[ChatCompletionRequest, Body()],
    service: Annotated[ChatService, Depends(chat_service)],
    tenant_id: Annotated[str, Depends(tenant)],
) -> Response:
    raw: dict[str, Any] = await http.json()  # forwarded as sent, unknown fields included
    return await service.complete(raw, body, tenant_id)
