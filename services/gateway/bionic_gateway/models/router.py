"""GET /v1/models: the upstream's list when it answers, else the configured ids."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from bionic_gateway.auth import Caller
from bionic_gateway.deps import caller, models_service
from bionic_gateway.errors import ERROR_RESPONSES
from bionic_gateway.models.service import ModelsService

router = APIRouter(tags=["models"], responses=ERROR_RESPONSES)


@router.get("/v1/models", summary="List models", response_model=None)
async def list_models(
    service: Annotated[ModelsService, Depends(models_service)],
    who: Annotated[Caller, Depends(caller)],
) -> Response:
    return await service.listing(who)
