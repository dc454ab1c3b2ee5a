"""The model list: the upstream's when it answers, else the configured ids."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.responses import JSONResponse, Response

from bionic_gateway.auth import Caller
from bionic_gateway.errors import OpenAIError
from bionic_gateway.upstream import Upstream, passthrough_headers

log = logging.getLogger(__name__)
MODELS_TIMEOUT = 5.0  # a silent upstream must not hold up the model list for long


class ModelsService:
    def __init__(self, upstream: Upstream, configured: list[str]) -> None:
        self._upstream = upstream
        self._configured = configured

    async def listing(self, caller: Caller) -> Response:
        try:
            reply = await self._upstream.send("GET", "models", caller, timeout=MODELS_TIMEOUT)
            body = await self._upstream.read(reply)
        except OpenAIError as exc:
            log.warning("upstream /models failed (%s); answering from configuration", exc)
        else:
            if reply.status == 200:
                return Response(body, 200, passthrough_headers(reply))
            log.warning("upstream /models answered %d; answering from configuration", reply.status)
        created = int(time.time())
        data: list[dict[str, Any]] = [
            {"id": m, "object": "model", "created": created, "owned_by": "bionicmemory"}
            for m in self._configured
        ]
        return JSONResponse({"object": "list", "data": data})
