"""GET /v1/models: the upstream's list when it answers, else the configured ids."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from bionic_gateway.deps import tenant, upstream
from bionic_gateway.upstream import Upstream, passthrough_headers

log = logging.getLogger(__name__)
router = APIRouter(tags=["models"])


@router.get("/v1/models", summary="List models", response_model=None)
async def list_models(
    request: Request,
    up: Annotated[Upstream, Depends(upstream)],
    _tenant: Annotated[str, Depends(tenant)],
) -> Response:
    try:
        reply = await up.client.get(up.url("models"), headers=up.headers(), timeout=5.0)
    except httpx.HTTPError as exc:
        log.warning("upstream /models failed (%s); answering from configuration", exc)
    else:
        if reply.status_code == 200:
            return Response(reply.content, 200, passthrough_headers(reply))
    configured: list[str] = request.app.state.settings.models
    data: list[dict[str, Any]] = [
        {"id": m, "object": "model", "created": int(time.time()), "owned_by": "bionicmemory"}
        for m in configured
    ]
    return JSONResponse({"object": "list", "data": data})
