"""Run the memory service: `python -m bionic_memory`."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import REGISTRY, start_http_server

from bionic.memory.v1 import memory_pb2, memory_pb2_grpc
from bionic_common.grpc_service import new_server, serve
from bionic_common.logs import setup_logging
from bionic_memory.config import MemorySettings
from bionic_memory.disk import DiskGuard
from bionic_memory.metrics import MemoryMetrics, TierSizes
from bionic_memory.service import MemoryService
from bionic_memory.servicer import MemoryServicer
from bionic_memory.store.base import MemoryStore
from bionic_memory.store.edge import EdgeStore
from bionic_memory.store.qdrant import QdrantStore


def open_store(settings: MemorySettings) -> MemoryStore:
    if settings.backend == "qdrant":
        return QdrantStore.connect(
            settings.qdrant_url,
            settings.qdrant_collection,
            settings.dimension,
            api_key=settings.qdrant_api_key,
        )
    return EdgeStore(settings.data_dir, settings.dimension, search_threads=settings.search_threads)


async def run(settings: MemorySettings) -> None:
    store = open_store(settings)
    executor = ThreadPoolExecutor(max_workers=settings.store_threads, thread_name_prefix="store")
    server = new_server(settings.max_concurrent_rpcs)
    service = MemoryService(store, settings)
    disk = DiskGuard(settings.data_dir if settings.backend == "edge" else None)
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(
        MemoryServicer(service, executor, MemoryMetrics(REGISTRY), disk), server
    )
    if settings.metrics_port:
        REGISTRY.register(TierSizes(service))
        start_http_server(settings.metrics_port, addr=settings.host)

    async def close() -> None:
        executor.shutdown(wait=True)
        store.close()

    await serve(
        server,
        f"{settings.host}:{settings.port}",
        [memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name],
        settings.grace_seconds,
        on_stop=close,
    )


def main() -> None:
    settings = MemorySettings()
    setup_logging("memory", settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
