"""POST /v1/embeddings: parse, call the service, return what it made."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from bionic_gateway.auth import Caller
from bionic_gateway.deps import caller
from bionic_gateway.embeddings.protocol import EmbeddingRequest, EmbeddingResponse
from bionic_gateway.embeddings.service import EmbeddingsService
from bionic_gateway.errors import ERROR_RESPONSES

router = APIRouter(tags=["embeddings"], responses=ERROR_RESPONSES)


async def embeddings_service(request: Request) -> EmbeddingsService:
    found: EmbeddingsService = request.app.state.embeddings
    return found


@router.post(
    "/v1/embeddings",
    summary="Embed texts with the memory's own embedder (OpenAI format)",
    description=(
        "Served by the embedder replicas, not the upstream: the vectors are the ones memory "
        "recalls with. `usage` counts the real tokens after truncation to the model's limit."
    ),
)
async def create_embeddings(
    body: Annotated[EmbeddingRequest, Body()],
    service: Annotated[EmbeddingsService, Depends(embeddings_service)],
    _who: Annotated[Caller, Depends(caller)],
) -> EmbeddingResponse:
    return await service.create(body)
