"""bionic.memory.v1 over gRPC: converts messages at the edge and calls MemoryService.

Bad input is INVALID_ARGUMENT, a memory outside the caller's scope is NOT_FOUND, a write
while the data folder's disk is (nearly) full is RESOURCE_EXHAUSTED; anything else is a bug
and reaches the client as UNKNOWN with its traceback in the log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2

from bionic.memory.v1 import memory_pb2 as pb
from bionic.memory.v1 import memory_pb2_grpc as pb_grpc
from bionic_common.memory_pb import (
    DISK_FULL,
    ROLE_FROM_PB,
    TIER_FROM_PB,
    exported_from_pb,
    exported_to_pb,
    memory_to_pb,
    scope_from_pb,
    scope_to_pb,
    struct_to_dict,
    tier_stats_to_pb,
)
from bionic_common.memory_types import Exported, Scope
from bionic_common.vectors import unpacked_f32
from bionic_memory.disk import DiskFull, DiskGuard
from bionic_memory.errors import InvalidArgument, NotFound
from bionic_memory.metrics import MemoryMetrics
from bionic_memory.service import MemoryService

T = TypeVar("T")
READ_ONLY = frozenset(
    {"Search", "Get", "List", "Export", "Stats", "ListScopes", "ScanForSuppression"}
)
IMPORT_BATCH = 256  # memories written per store call on import, at most
# ... and at most this many bytes of them (plus one): each write stays far under the free
# space DiskGuard keeps (64 MiB), which no write checked against it can then overrun.
IMPORT_BATCH_BYTES = 8 * 1024 * 1024


def _metadata(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A request's metadata as JSON data; JSON has no NaN or infinity, so a Struct holding
    one (any client can send it) is refused."""
    try:
        return struct_to_dict(struct)
    except ValueError as exc:
        raise InvalidArgument(f"metadata: {exc}") from exc


def _vector(request: pb.RecallRequest) -> Sequence[float]:
    """The request's vector: its packed float32 bytes when set, else its float list."""
    if not request.packed_vector:
        return request.vector
    try:
        return unpacked_f32(request.packed_vector)
    except ValueError as exc:
        raise InvalidArgument(f"packed_vector: {exc}") from exc


class MemoryServicer(pb_grpc.MemoryServiceServicer):
    def __init__(
        self,
        service: MemoryService,
        executor: ThreadPoolExecutor,
        metrics: MemoryMetrics,
        disk: DiskGuard,
    ) -> None:
        self._service = service
        self._executor = executor
        self._metrics = metrics
        self._disk = disk

    async def _call(self, context: grpc.aio.ServicerContext, method: str, fn: Callable[[], T]) -> T:
        """Run blocking store work off the event loop, time it, and map refusals to
        status codes (anything unexpected counts as UNKNOWN and propagates)."""
        started = time.perf_counter()
        trailer: tuple[tuple[str, str], ...] = ()
        try:
            if method not in READ_ONLY:
                self._disk.check()
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except DiskFull as exc:
            code, message, trailer = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), (DISK_FULL,)
        except InvalidArgument as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except NotFound as exc:
            code, message = grpc.StatusCode.NOT_FOUND, str(exc)
        except Exception:
            self._metrics.rpc_refused.labels(method, grpc.StatusCode.UNKNOWN.name).inc()
            raise
        finally:
            self._metrics.rpc_seconds.labels(method).observe(time.perf_counter() - started)
        self._metrics.rpc_refused.labels(method, code.name).inc()
        await context.abort(code, message, trailing_metadata=trailer)
        raise AssertionError("unreachable: abort raises")

    async def Recall(
        self, request: pb.RecallRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecallResponse:
        started = time.perf_counter()
        result = await self._call(
            context,
            "Recall",
            lambda: self._service.recall(
                scope_from_pb(request.scope),
                request.text,
                _vector(request),
                limit=request.limit,
                metadata=_metadata(request.metadata),
                dry_run=request.dry_run,
                now=request.now,
                idempotency_key=request.idempotency_key,
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
            "Remember",
            lambda: self._service.remember(
                scope_from_pb(request.scope),
                ROLE_FROM_PB[request.role],
                request.text,
                request.vector,
                metadata=_metadata(request.metadata),
                idempotency_key=request.idempotency_key,
                pinned=request.pinned,
                now=request.now,
                reinforce_related=request.reinforce_related,
            ),
        )
        return pb.RememberResponse(memory=memory_to_pb(memory), created=created)

    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        memories = await self._call(
            context,
            "Search",
            lambda: self._service.search(
                scope_from_pb(request.scope),
                request.vector,
                limit=request.limit,
                tier=TIER_FROM_PB.get(request.tier),
                min_score=request.min_score,
                now=request.now,
            ),
        )
        return pb.SearchResponse(memories=[memory_to_pb(m) for m in memories])

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.Memory:
        memory = await self._call(
            context, "Get", lambda: self._service.get(scope_from_pb(request.scope), request.id)
        )
        return memory_to_pb(memory)

    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponse:
        memories, token = await self._call(
            context,
            "List",
            lambda: self._service.list_page(
                scope_from_pb(request.scope),
                request.page_size,
                request.page_token,
                TIER_FROM_PB.get(request.tier),
            ),
        )
        return pb.ListResponse(memories=[memory_to_pb(m) for m in memories], next_page_token=token)

    async def Update(
        self, request: pb.UpdateRequest, context: grpc.aio.ServicerContext
    ) -> pb.Memory:
        memory = await self._call(
            context,
            "Update",
            lambda: self._service.update(
                scope_from_pb(request.scope),
                request.id,
                text=request.text if request.HasField("text") else None,
                vector=request.vector,
                pinned=request.pinned if request.HasField("pinned") else None,
                metadata=_metadata(request.metadata),
                now=request.now,
            ),
        )
        return memory_to_pb(memory)

    async def SetSummary(
        self, request: pb.SetSummaryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Memory:
        memory = await self._call(
            context,
            "SetSummary",
            lambda: self._service.set_summary(
                scope_from_pb(request.scope),
                request.id,
                request.summary,
                request.vector,
                metadata=_metadata(request.metadata),
            ),
        )
        return memory_to_pb(memory)

    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResponse:
        deleted = await self._call(
            context,
            "Delete",
            lambda: self._service.delete(scope_from_pb(request.scope), request.id),
        )
        return pb.DeleteResponse(deleted=deleted)

    async def ForgetUser(
        self, request: pb.ForgetUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.ForgetUserResponse:
        deleted = await self._call(
            context, "ForgetUser", lambda: self._service.forget_user(scope_from_pb(request.scope))
        )
        return pb.ForgetUserResponse(deleted=deleted)

    async def Export(
        self, request: pb.ExportRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportedMemory]:
        scope = scope_from_pb(request.scope)
        offset: str | None = None
        while True:
            page, offset = await self._call(
                context, "Export", partial(self._service.export_page, scope, offset)
            )
            for item in page:
                yield exported_to_pb(item)
            if offset is None:
                return

    async def Import(
        self, request_iterator: AsyncIterator[pb.ImportRequest], context: grpc.aio.ServicerContext
    ) -> pb.ImportResponse:
        imported = skipped = size = 0
        batch: list[Exported] = []
        scope: Scope | None = None
        async for request in request_iterator:
            if scope is None:
                scope = scope_from_pb(request.scope)
            elif scope != scope_from_pb(request.scope):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "every import request needs the same scope"
                )
            if request.memory.memory.role not in ROLE_FROM_PB or (
                request.memory.memory.tier not in TIER_FROM_PB
            ):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"import item {imported + skipped + len(batch)}: role and tier are required",
                )
            try:
                batch.append(exported_from_pb(request.memory))
            except ValueError as exc:  # json_format refuses NaN and infinity in a Struct
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"import item {imported + skipped + len(batch)}: metadata: {exc}",
                )
            size += request.memory.ByteSize()
            if len(batch) == IMPORT_BATCH or size >= IMPORT_BATCH_BYTES:
                done, seen = await self._import(context, scope, batch)
                imported, skipped, batch, size = imported + done, skipped + seen, [], 0
        if scope is not None and batch:
            done, seen = await self._import(context, scope, batch)
            imported, skipped = imported + done, skipped + seen
        return pb.ImportResponse(imported=imported, skipped=skipped)

    async def _import(
        self, context: grpc.aio.ServicerContext, scope: Scope, batch: list[Exported]
    ) -> tuple[int, int]:
        return await self._call(context, "Import", lambda: self._service.import_batch(scope, batch))

    async def Stats(
        self, request: pb.StatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatsResponse:
        tiers = await self._call(
            context,
            "Stats",
            lambda: self._service.stats(scope_from_pb(request.scope), now=request.now),
        )
        return pb.StatsResponse(tiers=[tier_stats_to_pb(t) for t in tiers])

    async def Prune(
        self, request: pb.PruneRequest, context: grpc.aio.ServicerContext
    ) -> pb.PruneResponse:
        pruned = await self._call(
            context,
            "Prune",
            lambda: self._service.prune(now=request.now, tier=TIER_FROM_PB.get(request.tier)),
        )
        for tier, outcome, count in (
            ("ltm", "deleted", pruned.forgotten_long_term),
            ("stm", "deleted", pruned.forgotten_short_term),
            ("ltm", "archived", pruned.archived),
            ("archive", "deleted", pruned.forgotten_archive),
        ):
            self._metrics.forgotten.labels(tier, outcome).inc(count)
        return pb.PruneResponse(
            forgotten_long_term=pruned.forgotten_long_term,
            forgotten_short_term=pruned.forgotten_short_term,
            archived=pruned.archived,
            forgotten_archive=pruned.forgotten_archive,
        )

    async def ListScopes(
        self, request: pb.ListScopesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Scope]:
        scopes = await self._call(
            context, "ListScopes", lambda: self._service.list_scopes(request.tenant)
        )
        for scope in scopes:
            yield scope_to_pb(scope)

    async def ScanForSuppression(
        self, request: pb.ScanRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScanResponse:
        clusters, scanned = await self._call(
            context,
            "ScanForSuppression",
            lambda: self._service.scan_for_suppression(
                scope_from_pb(request.scope),
                request.similarity_threshold,
                request.max_memories,
            ),
        )
        return pb.ScanResponse(
            clusters=[
                pb.Cluster(representative_id=c.representative_id, member_ids=c.member_ids)
                for c in clusters
            ],
            scanned=scanned,
        )

    async def Merge(self, request: pb.MergeRequest, context: grpc.aio.ServicerContext) -> pb.Memory:
        memory = await self._call(
            context,
            "Merge",
            lambda: self._service.merge(
                scope_from_pb(request.scope),
                request.representative_id,
                list(request.member_ids),
                now=request.now,
            ),
        )
        return memory_to_pb(memory)
