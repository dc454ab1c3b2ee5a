"""The memory management API: each call is confined to the caller's tenant and one user."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import grpc
from pydantic import ValidationError

from bionic_common.clients import EmbedderClient, MemoryClient, is_disk_full
from bionic_common.memory_types import Exported, Scope, Tier
from bionic_gateway.chat.prompt import MemoryPrompt
from bionic_gateway.chat.protocol import last_user_text
from bionic_gateway.errors import OpenAIError
from bionic_gateway.memories.protocol import (
    AddMemory,
    Deleted,
    ExportLine,
    Forgotten,
    Imported,
    MemoryList,
    MemoryObject,
    PatchMemory,
    RecallPreview,
    RecallResult,
    SearchMemories,
    ServerStats,
    Stats,
    TierStatsObject,
)
from bionic_gateway.recall import Controls, Recaller

log = logging.getLogger(__name__)

EMBED_BATCH = 64  # texts per embed call when an import brings lines without vectors
GRPC_STATUS = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


@contextmanager
def memory_errors() -> Iterator[None]:
    """gRPC failures as OpenAI errors: bad input 4xx, a service down or too slow 503."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        if is_disk_full(exc):  # not a rate limit: retrying soon will not help
            raise OpenAIError(507, exc.details(), code="insufficient_storage") from exc
        status = GRPC_STATUS.get(exc.code(), 503)
        if status == 503:
            log.warning("memory API: a service is unavailable (%s)", exc.code().name)
            message = "the memory service is unavailable, try again"
        else:
            message = exc.details() or exc.code().name.lower()
        raise OpenAIError(status, message, code=exc.code().name.lower()) from exc


class MemoriesService:
    def __init__(
        self,
        embedder: EmbedderClient,
        memory: MemoryClient,
        recaller: Recaller,
        prompt: MemoryPrompt,
        timeout: float,
    ) -> None:
        self._embedder = embedder
        self._memory = memory
        self._recaller = recaller
        self._prompt = prompt
        self._timeout = timeout

    async def _document(self, text: str) -> list[float]:
        return (await self._embedder.embed([text], "document", timeout=self._timeout)).vectors[0]

    async def page(
        self, scope: Scope, limit: int, after: str | None, tier: Tier | None
    ) -> MemoryList:
        with memory_errors():
            page, token = await self._memory.list_page(
                scope, page_size=limit, page_token=after or "", tier=tier, timeout=self._timeout
            )
        return MemoryList(
            data=[MemoryObject.of(m) for m in page], has_more=bool(token), next_cursor=token or None
        )

    async def add(self, scope: Scope, body: AddMemory) -> MemoryObject:
        with memory_errors():
            memory, _ = await self._memory.remember(
                scope,
                body.role,
                body.text,
                await self._document(body.text),
                metadata=body.metadata,
                pinned=body.pinned,
                timeout=self._timeout,
            )
        return MemoryObject.of(memory)

    async def get(self, scope: Scope, memory_id: str) -> MemoryObject:
        with memory_errors():
            return MemoryObject.of(await self._memory.get(scope, memory_id, timeout=self._timeout))

    async def patch(self, scope: Scope, memory_id: str, body: PatchMemory) -> MemoryObject:
        with memory_errors():
            vector = await self._document(body.text) if body.text is not None else None
            memory = await self._memory.update(
                scope,
                memory_id,
                text=body.text,
                vector=vector,
                pinned=body.pinned,
                metadata=body.metadata,
                timeout=self._timeout,
            )
        return MemoryObject.of(memory)

    async def delete(self, scope: Scope, memory_id: str) -> Deleted:
        with memory_errors():
            deleted = await self._memory.delete(scope, memory_id, timeout=self._timeout)
        if not deleted:
            raise OpenAIError(404, f"no memory {memory_id}", param="memory_id", code="not_found")
        return Deleted(id=memory_id)

    async def forget(self, scope: Scope) -> Forgotten:
        with memory_errors():
            deleted = await self._memory.forget_user(scope, timeout=self._timeout)
        return Forgotten(user=scope.user, deleted=deleted)

    async def search(self, scope: Scope, body: SearchMemories) -> MemoryList:
        with memory_errors():
            vector = await self._embedder.embed([body.query], "query", timeout=self._timeout)
            found = await self._memory.search(
                scope,
                vector.vectors[0],
                limit=body.limit,
                tier=body.tier,
                min_score=body.min_score,
                timeout=self._timeout,
            )
        return MemoryList(data=[MemoryObject.of(m) for m in found])

    async def recall(self, scope: Scope, body: RecallPreview) -> RecallResult:
        """What a chat turn with these messages would inject, storing nothing."""
        messages = [m.model_dump(exclude_unset=True) for m in body.messages]
        text = last_user_text(body.messages)
        memories = []
        if text.strip():
            controls = Controls(mode="read_only", recall_limit=body.recall_limit or 0)
            with memory_errors():
                memories = (
                    await self._recaller.fetch(scope, text, controls, self._timeout)
                ).memories
        return RecallResult(
            memories=[MemoryObject.of(m) for m in memories],
            system_message=self._prompt.message(memories),
            messages=self._prompt.inject(messages, memories),
        )

    async def export(self, scope: Scope) -> AsyncIterator[bytes]:
        """JSON lines, one memory with its vector each. The first is read before the answer
        starts, so an unavailable service or a bad scope is still a proper error status."""
        items = self._memory.export(scope, timeout=self._timeout)
        with memory_errors():
            first = await anext(items, None)

        async def lines() -> AsyncIterator[bytes]:
            if first is None:
                return
            yield _line(first)
            async for item in items:
                yield _line(item)

        return lines()

    async def import_(self, scope: Scope, body: bytes) -> Imported:
        """Restore exported lines into the caller's scope, keeping ids, times, strength and
        metadata; a line without a vector is embedded again."""
        lines: list[ExportLine] = []
        for number, raw in enumerate(body.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                lines.append(ExportLine.model_validate_json(raw))
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(p) for p in error["loc"]) or "line"
                raise OpenAIError(
                    400, f"line {number}: {where}: {error['msg']}", code="invalid_jsonl"
                ) from exc
        with memory_errors():
            vectors = await self._vectors(lines)

            async def items() -> AsyncIterator[Exported]:
                for line, vector in zip(lines, vectors, strict=True):
                    yield line.to_exported(scope, vector)

            imported, skipped = await self._memory.import_(scope, items(), timeout=self._timeout)
        return Imported(user=scope.user, imported=imported, skipped=skipped)

    async def _vectors(self, lines: list[ExportLine]) -> list[list[float]]:
        missing = [i for i, line in enumerate(lines) if not line.vector]
        vectors = [line.vector or [] for line in lines]
        for start in range(0, len(missing), EMBED_BATCH):
            batch = missing[start : start + EMBED_BATCH]
            texts = [lines[i].summary or lines[i].text for i in batch]
            embedded = await self._embedder.embed(texts, "document", timeout=self._timeout)
            for i, vector in zip(batch, embedded.vectors, strict=True):
                vectors[i] = vector
        return vectors

    async def stats(self, scope: Scope) -> Stats:
        with memory_errors():
            tiers = await self._memory.stats(scope, timeout=self._timeout)
        return Stats(user=scope.user, tiers=[TierStatsObject.of(t) for t in tiers])

    async def server_stats(self) -> ServerStats:
        """Every tenant and user holding memories, counted (admin)."""
        tenants: set[str] = set()
        users = 0
        with memory_errors():
            async for found in self._memory.list_scopes(timeout=self._timeout):
                tenants.add(found.tenant)
                users += 1
        return ServerStats(tenants=len(tenants), users=users)


def _line(item: Exported) -> bytes:
    return ExportLine.of_exported(item).model_dump_json().encode() + b"\n"
