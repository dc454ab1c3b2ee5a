"""The gateway's FastAPI app: built from settings, objects made in `lifespan`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from bionic_common.clients import EmbedderClient, MemoryClient
from bionic_gateway.admin.router import router as admin_router
from bionic_gateway.auth import TenantResolver, load_keys, load_salt
from bionic_gateway.chat.prompt import MemoryPrompt
from bionic_gateway.chat.router import router as chat_router
from bionic_gateway.chat.service import ChatService
from bionic_gateway.config import GatewaySettings
from bionic_gateway.deps import Services
from bionic_gateway.embeddings.router import router as embeddings_router
from bionic_gateway.embeddings.service import EmbeddingsService
from bionic_gateway.errors import install_error_handlers
from bionic_gateway.limits import BodyLimit
from bionic_gateway.memories.router import router as memories_router
from bionic_gateway.memories.service import MemoriesService
from bionic_gateway.metrics import GatewayMetrics
from bionic_gateway.models.router import router as models_router
from bionic_gateway.models.service import ModelsService
from bionic_gateway.ops.router import router as ops_router
from bionic_gateway.passthrough.router import router as passthrough_router
from bionic_gateway.passthrough.service import PassthroughService
from bionic_gateway.queue import TaskQueue
from bionic_gateway.ratelimit import RateLimiter
from bionic_gateway.recall import Recaller
from bionic_gateway.requests import RequestContext
from bionic_gateway.upstream import Upstream

log = logging.getLogger(__name__)

DESCRIPTION = """\
Point any OpenAI client here instead of at the model. Chat completions are answered by the
upstream model with the user's recalled memories added; `/v1/models` and every other
`/v1/*` path not listed here (completions, files, audio, images, moderations…) are passed
through to the upstream as they are. The memory API under `/v1/memories` manages what is
remembered, always within the caller's own tenant (its API key) and one `user`; import and
`/v1/admin/*` need an admin key.
"""


def create_app(settings: GatewaySettings) -> FastAPI:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    prompt = MemoryPrompt.from_settings(settings)
    tenants = TenantResolver(load_keys(settings), load_salt(settings), settings.admin_keys)
    if tenants.open:
        log.warning("no API keys configured: the gateway is open, one tenant per key")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedder = EmbedderClient(settings.embedder_target)
        memory = MemoryClient(settings.memory_target)
        upstream = Upstream(settings)
        queue = TaskQueue.from_settings(settings, metrics)
        recaller = Recaller(
            embedder,
            memory,
            metrics,
            settings.memory_deadline,
            settings.recall_limit,
            late_timeout=settings.memory_timeout,
        )
        app.state.embeddings = EmbeddingsService(embedder, settings.upstream_timeout)
        app.state.services = Services(
            chat=ChatService(recaller, prompt, upstream, queue, metrics),
            memories=MemoriesService(embedder, memory, recaller, prompt, settings.memory_timeout),
            models=ModelsService(upstream, settings.models),
            passthrough=PassthroughService(upstream),
            tenants=tenants,
            limiter=RateLimiter.from_settings(settings),
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
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics_registry = registry
    install_error_handlers(app)
    app.include_router(ops_router)
    app.include_router(chat_router)
    app.include_router(models_router)
    app.include_router(memories_router)
    app.include_router(admin_router)
    app.include_router(embeddings_router)
    app.include_router(passthrough_router)  # last: it takes every other /v1 path

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["x-bionic-memory", "x-request-id", "server-timing", "retry-after"],
        )
    app.add_middleware(RequestContext, metrics=metrics)
    return app
