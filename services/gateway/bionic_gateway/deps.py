"""FastAPI dependencies: the objects `lifespan` built, and the caller's tenant.

They are `async` although they never wait: FastAPI runs a plain function dependency on a
worker thread, two thread hops per request for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from bionic_gateway.auth import Caller, TenantResolver
from bionic_gateway.chat.service import ChatService
from bionic_gateway.errors import OpenAIError
from bionic_gateway.memories.service import MemoriesService
from bionic_gateway.models.service import ModelsService
from bionic_gateway.passthrough.service import PassthroughService
from bionic_gateway.ratelimit import RateLimiter


@dataclass(frozen=True, slots=True)
class Services:
    chat: ChatService
    memories: MemoriesService
    models: ModelsService
    passthrough: PassthroughService
    tenants: TenantResolver
    limiter: RateLimiter | None = None


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def chat_service(request: Request) -> ChatService:
    return services(request).chat


async def memories_service(request: Request) -> MemoriesService:
    return services(request).memories


async def models_service(request: Request) -> ModelsService:
    return services(request).models


async def passthrough_service(request: Request) -> PassthroughService:
    return services(request).passthrough


async def caller(request: Request) -> Caller:
    """Who calls: 401 unless the bearer key is accepted (any key in open mode), 429 with
    Retry-After when the caller's tenant is over its rate limit."""
    found = services(request)
    who = found.tenants.caller(request.headers.get("authorization"))
    wait = found.limiter.acquire(who.tenant) if found.limiter is not None else 0
    if wait:
        raise OpenAIError(
            429,
            f"rate limit reached, retry in {wait} s",
            code="rate_limit_exceeded",
            headers={"retry-after": str(wait)},
        )
    return who


async def admin(who: Annotated[Caller, Depends(caller)]) -> Caller:
    """An admin caller: 403 for every other key."""
    if not who.admin:
        raise OpenAIError(403, "this operation needs an admin key", code="admin_only")
    return who
