"""bionic.memory.v1 over gRPC: converts messages at the edge and calls MemoryService."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc

from bionic.memory.v1 import memory_pb2 as pb
from bionic.memory.v1 import memory_pb2_grpc as pb_grpc
from bionic_common.memory_pb import (
    ROLE_FROM_PB,
    TIER_FROM_PB,
    memory_to_pb,
    scope_from_pb,
    struct_to_dict,
)
from bionic_memory.service import InvalidArgument, MemoryService

T = TypeVar("T")


class MemoryServicer(pb_grpc.MemoryServiceServicer):
    def __init__(self, service: MemoryService, executor: ThreadPoolExecutor) -> None:
        self._service = service
        self._executor = executor

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[[], T]) -> T:
        """Run blocking store work off the event loop; bad input becomes INVALID_ARGUMENT."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises

    async def Recall(
        self, request: pb.RecallRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecallResponse:
        started = time.perf_counter()
        result = await self._call(
            context,
            lambda: self._service.recall(
                scope_from_pb(request.scope),
                request.text,
                request.vector,
                limit=request.limit,
                metadata=struct_to_dict(request.metadata),
                dry_run=request.dry_run,
            ),
        )
        return pb.RecallResponse(
            stored=memory_to_pb(result.stored) if result.stored else None,
            memories=[memory_to_pb(m) for m in result.memories],
            timing=pb.Timing(total_us=int((time.perf_counter() - started) * 1e6)),
        )

    async def Remember(
        self, request: pb.RememberRequest, context: grpc.aio.ServicerContext
    ) -> pb.RememberResponse:
        if request.role not in ROLE_FROM_PB:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "role is required")
        memory, created = await self._call(
            context,
            lambda: self._service.remember(
                scope_from_pb(request.scope),
                ROLE_FROM_PB[request.role],
                request.text,
                request.vector,
                metadata=struct_to_dict(request.metadata),
                idempotency_key=request.idempotency_key,
            ),
        )
        return pb.RememberResponse(memory=memory_to_pb(memory), created=created)

    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponse:
        memories, token = await self._call(
            context,
            lambda: self._service.list_page(
                scope_from_pb(request.scope),
                request.page_size,
                request.page_token,
                TIER_FROM_PB.get(request.tier),
            ),
        )
        return pb.ListResponse(memories=[memory_to_pb(m) for m in memories], next_page_token=token)
