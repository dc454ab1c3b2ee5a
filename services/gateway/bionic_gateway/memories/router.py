"""/v1/memories…: parse, call the service in the caller's scope, return what it made."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, status
from starlette.responses import StreamingResponse

from bionic_common.memory_types import Scope, Tier
from bionic_gateway.auth import Caller
from bionic_gateway.deps import admin, caller, memories_service
from bionic_gateway.errors import ERROR_RESPONSES
from bionic_gateway.memories.protocol import (
    AddMemory,
    Deleted,
    Forgotten,
    Imported,
    MemoryList,
    MemoryObject,
    PatchMemory,
    RecallPreview,
    RecallResult,
    SearchMemories,
    Stats,
)
from bionic_gateway.memories.service import MemoriesService

router = APIRouter(prefix="/v1/memories", tags=["memories"], responses=ERROR_RESPONSES)
Service = Annotated[MemoriesService, Depends(memories_service)]
Who = Annotated[Caller, Depends(caller)]
Admin = Annotated[Caller, Depends(admin)]
User = Annotated[str, Query(min_length=1, max_length=256, description="Whose memories")]
MemoryId = Annotated[str, Path(min_length=1, max_length=128)]
IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-ndjson": {
                "schema": {"type": "string"},
                "example": '{"id": "5f0c…", "role": "user", "tier": "ltm", "text": "…", …}\n',
            }
        },
    }
}


def scope(who: Caller, user: str) -> Scope:
    return Scope(tenant=who.tenant, user=user)


@router.get("", summary="List a user's memories, a page at a time")
async def list_memories(
    service: Service,
    who: Who,
    user: User = "default",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=512, description="next_cursor")] = None,
    tier: Tier | None = None,
) -> MemoryList:
    return await service.page(scope(who, user), limit, after, tier)


@router.post("", summary="Add a memory", status_code=status.HTTP_201_CREATED)
async def add_memory(
    service: Service, who: Who, body: Annotated[AddMemory, Body()]
) -> MemoryObject:
    return await service.add(scope(who, body.user), body)


@router.delete("", summary="Forget a user: delete all their memories")
async def forget_user(
    service: Service, who: Who, user: Annotated[str, Query(min_length=1, max_length=256)]
) -> Forgotten:
    return await service.forget(scope(who, user))


@router.post("/search", summary="Search a user's memories by meaning (changes nothing)")
async def search_memories(
    service: Service, who: Who, body: Annotated[SearchMemories, Body()]
) -> MemoryList:
    return await service.search(scope(who, body.user), body)


@router.post(
    "/recall", summary="Preview what chat would inject for these messages (stores nothing)"
)
async def recall_preview(
    service: Service, who: Who, body: Annotated[RecallPreview, Body()]
) -> RecallResult:
    return await service.recall(scope(who, body.user), body)


@router.get(
    "/export",
    summary="Export a user's memories as JSON lines (with vectors)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export_memories(service: Service, who: Who, user: User = "default") -> StreamingResponse:
    lines = await service.export(scope(who, user))
    return StreamingResponse(lines, media_type="application/x-ndjson")


@router.post(
    "/import",
    summary="Import JSON lines into a user's memories, keeping ids, times and metadata",
    description=(
        "Admin keys only (403 for others): timestamps, strength and metadata are kept as "
        "given, which rewrites history. Each line is a memory as `/export` wrote it; its "
        "`user` (and any tenant) is ignored: everything lands in the caller's own tenant, "
        "under `user`. A line without `vector` is embedded again."
    ),
    openapi_extra=IMPORT_BODY,
)
async def import_memories(
    request: Request, service: Service, who: Admin, user: User = "default"
) -> Imported:
    return await service.import_(scope(who, user), await request.body())


@router.get("/stats", summary="Counts and strength of a user's memories, per tier")
async def memory_stats(service: Service, who: Who, user: User = "default") -> Stats:
    return await service.stats(scope(who, user))


@router.get("/{memory_id}", summary="Get a memory")
async def get_memory(
    service: Service, who: Who, memory_id: MemoryId, user: User = "default"
) -> MemoryObject:
    return await service.get(scope(who, user), memory_id)


@router.patch("/{memory_id}", summary="Edit a memory's text, pin or unpin it, merge metadata")
async def patch_memory(
    service: Service,
    who: Who,
    memory_id: MemoryId,
    body: Annotated[PatchMemory, Body()],
    user: User = "default",
) -> MemoryObject:
    return await service.patch(scope(who, user), memory_id, body)


@router.delete("/{memory_id}", summary="Delete a memory")
async def delete_memory(
    service: Service, who: Who, memory_id: MemoryId, user: User = "default"
) -> Deleted:
    return await service.delete(scope(who, user), memory_id)
