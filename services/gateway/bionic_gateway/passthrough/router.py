"""/v1/* that the gateway does not serve itself: completions, files, audio, images…"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from bionic_gateway.auth import Caller
from bionic_gateway.deps import caller, passthrough_service
from bionic_gateway.passthrough.service import PassthroughService

router = APIRouter()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


# Registered last: every route above it wins. Out of the schema, which documents the
# gateway's own endpoints; these are the upstream's.
@router.api_route("/v1/{path:path}", methods=METHODS, include_in_schema=False)
async def passthrough(
    path: str,
    request: Request,
    service: Annotated[PassthroughService, Depends(passthrough_service)],
    who: Annotated[Caller, Depends(caller)],
) -> Response:
    return await service.relay(request, path, who)
