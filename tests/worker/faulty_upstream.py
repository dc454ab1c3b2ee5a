"""An OpenAI-compatible upstream that misbehaves on demand, for the summary fallback."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from tests.support.ports import free_port

GOOD_SUMMARY = "Achen plans a trip to Hangzhou in May."


def _completion(content: str, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-faulty",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "faulty",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
    }


class FaultyUpstream:
    """`mode`: ok, error (HTTP 500), slow (answers after `delay`), ramble (over the
    bound), cut (stopped by max_tokens), garbage (not JSON). Counts the calls it got."""

    def __init__(self, mode: str = "ok", delay: float = 30.0) -> None:
        self.mode = mode
        self.delay = delay
        self.calls = 0
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "faulty", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            await request.json()
            self.calls += 1
            if self.mode == "error":
                return JSONResponse({"error": {"message": "boom"}}, status_code=500)
            if self.mode == "slow":
                await asyncio.sleep(self.delay)
            if self.mode == "ramble":
                return JSONResponse(_completion("This goes on and on. " * 40))
            if self.mode == "cut":
                return JSONResponse(_completion("Achen plans a trip to", "length"))
            if self.mode == "garbage":
                return PlainTextResponse("not json at all")
            return JSONResponse(_completion(GOOD_SUMMARY))

        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FaultyUpstream:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("faulty upstream did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
