"""/v1/admin/…: admin keys only; every other key gets 403."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from bionic_gateway.auth import Caller
from bionic_gateway.deps import admin, memories_service
from bionic_gateway.errors import ERROR_RESPONSES
from bionic_gateway.memories.protocol import ServerStats
from bionic_gateway.memories.service import MemoriesService

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)


@router.get("/stats", summary="Server-wide counts: tenants and users holding memories")
async def server_stats(
    service: Annotated[MemoriesService, Depends(memories_service)],
    _admin: Annotated[Caller, Depends(admin)],
) -> ServerStats:
    return await service.server_stats()
