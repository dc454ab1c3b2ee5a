"""The gateway's FastAPI app: built from settings, objects made in `lifespan`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import make_asgi_app

from bionic_common.clients import EmbedderClient, MemoryClient
from bionic_gateway.auth import TenantResolver, load_salt
from bionic_gateway.chat.router import router as chat_router
from bionic_gateway.chat.service import ChatService
from bionic_gateway.config import GatewaySettings
from bionic_gateway.deps import Services
from bionic_gateway.errors import install_error_handlers
from bionic_gateway.limits import BodyLimit
from bionic_gateway.models.router import router as models_router
from bionic_gateway.queue import TaskQueue
from bionic_gateway.upstream import Upstream


def create_app(settings: GatewaySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedder = EmbedderClient(settings.embedder_target)
        memory = MemoryClient(settings.memory_target)
        upstream = Upstream(settings)
        queue = TaskQueue(settings.broker_url)
        app.state.services = Services(
            chat=ChatService(settings, embedder, memory, upstream, queue),
            upstream=upstream,
            tenants=TenantResolver(settings.api_keys, load_salt(settings)),
        )
        try:
            yield
        finally:
            await upstream.close()
            await embedder.close()
            await memory.close()
            queue.close()

    app = FastAPI(
        title="BionicMemory",
        summary="An OpenAI-compatible proxy that gives any chat model a long-term memory.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(models_router)
    app.mount("/metrics", make_asgi_app())

    @app.get("/health", tags=["ops"], summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
