"""FastAPI dependencies: the objects `lifespan` built, and the caller's tenant."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from bionic_gateway.auth import Caller, TenantResolver
from bionic_gateway.chat.service import ChatService
from bionic_gateway.memories.service import MemoriesService
from bionic_gateway.models.service import ModelsService
from bionic_gateway.passthrough.service import PassthroughService


@dataclass(frozen=True, slots=True)
class Services:
    chat: ChatService
    memories: MemoriesService
    models: ModelsService
    passthrough: PassthroughService
    tenants: TenantResolver


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def chat_service(request: Request) -> ChatService:
    return services(request).chat


def memories_service(request: Request) -> MemoriesService:
    return services(request).memories


def models_service(request: Request) -> ModelsService:
    return services(request).models


def passthrough_service(request: Request) -> PassthroughService:
    return services(request).passthrough


def caller(request: Request) -> Caller:
    """Who calls: 401 unless the bearer key is accepted (any key in open mode)."""
    return services(request).tenants.caller(request.headers.get("authorization"))
