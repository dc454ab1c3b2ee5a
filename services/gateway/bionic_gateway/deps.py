"""FastAPI dependencies: the objects `lifespan` built, and the caller's tenant."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from bionic_gateway.auth import TenantResolver
from bionic_gateway.chat.service import ChatService
from bionic_gateway.upstream import Upstream


@dataclass(frozen=True, slots=True)
class Services:
    chat: ChatService
    upstream: Upstream
    tenants: TenantResolver


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def chat_service(request: Request) -> ChatService:
    return services(request).chat


def upstream(request: Request) -> Upstream:
    return services(request).upstream


def tenant(request: Request) -> str:
    return services(request).tenants.tenant(request.headers.get("authorization"))
