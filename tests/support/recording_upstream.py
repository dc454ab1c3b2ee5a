"""A small OpenAI-compatible upstream that records every request it gets.

Used in addition to the real llama.cpp server, to assert exactly what the gateway sent.
It answers instantly (a zero-latency upstream for benchmarks), and the model name picks a
behaviour for tests of the gateway's relaying:

* `fail-<status>`: an OpenAI error with that status (429 carries retry headers);
* `hang`: answers after `HANG_SECONDS` (to trip the gateway's upstream timeout);
* `break-stream`: streams one chunk, then drops the connection;
* `slow-stream`: a chunk every 0.1 s for a minute; a client that leaves is recorded in
  `cancelled`;
* `tools`: calls a tool (`get_weather`) instead of answering;
* `echo`: answers `echo_reply(last user message)`, a reply of its own for every turn.

With `stream_options.include_usage` a stream ends with a usage chunk. Any other `/v1/*`
request is echoed back as JSON (method, path, query, body size and digest), or streamed
as server-sent events when its query has `sse=N`.

`python -m tests.support.recording_upstream --port N` runs one in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.support.ports import free_port

REPLY = "Noted! I will remember that."
HANG_SECONDS = 30.0
RETRY_AFTER = "7"
TOOL_CALL = {
    "id": "call_rec_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Hangzhou"}'},
}
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def echo_reply(said: str) -> str:
    return f"Noted: {said}"


def _reply(body: dict[str, Any]) -> str:
    if body["model"] != "echo":
        return REPLY
    said = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    return echo_reply(str(said[-1]) if said else "")


def _error(status: int) -> JSONResponse:
    headers = {"x-upstream-marker": "recorder"}
    if status == 429:
        headers |= {"retry-after": RETRY_AFTER, "x-ratelimit-reset-requests": "7s"}
    body = {
        "error": {
            "message": f"recorder says {status}",
            "type": "upstream_test_error",
            "param": None,
            "code": f"code_{status}",
        }
    }
    return JSONResponse(body, status, headers)


def _chunk(body: dict[str, Any], created: int, delta: dict[str, Any], finish: str | None) -> bytes:
    chunk = {
        "id": "chatcmpl-rec",
        "object": "chat.completion.chunk",
        "created": created,
        "model": body["model"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _completion(body: dict[str, Any], created: int) -> dict[str, Any]:
    tools = body["model"] == "tools"
    message: dict[str, Any] = (
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
        if tools
        else {"role": "assistant", "content": _reply(body)}
    )
    return {
        "id": "chatcmpl-rec",
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": [
            {
                "index": i,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tools else "stop",
            }
            for i in range(int(body.get("n") or 1))
        ],
        "usage": USAGE,
    }


def _app(recorder: RecordingUpstream) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "recorder", "object": "model"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        body = await request.json()
        recorder.requests.append({"body": body, "headers": dict(request.headers)})
        created = int(time.time())
        model = str(body.get("model", ""))
        if model.startswith("fail-"):
            return _error(int(model.removeprefix("fail-")))
        if model == "hang":
            await asyncio.sleep(HANG_SECONDS)
        if not body.get("stream"):
            return JSONResponse(_completion(body, created))
        usage = (body.get("stream_options") or {}).get("include_usage")

        async def events() -> AsyncIterator[bytes]:
            if model == "tools":
                yield _chunk(body, created, {"role": "assistant", "tool_calls": [
                    {"index": 0, **TOOL_CALL}
                ]}, None)  # fmt: skip
                yield _chunk(body, created, {}, "tool_calls")
            else:
                words = _reply(body).split(" ")
                for i, word in enumerate(words):
                    yield _chunk(body, created, {"content": word if i == 0 else " " + word}, None)
                    if model == "break-stream":
                        raise RuntimeError("the recorder breaks its stream on purpose")
                yield _chunk(body, created, {}, "stop")
            if usage:
                last = {
                    "id": "chatcmpl-rec",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body["model"],
                    "choices": [],
                    "usage": USAGE,
                }
                yield f"data: {json.dumps(last)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        async def slow() -> AsyncIterator[bytes]:
            try:
                for i in range(600):
                    yield _chunk(body, created, {"content": f"{i} "}, None)
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                recorder.cancelled.append(body)
                raise

        stream = slow() if model == "slow-stream" else events()
        return StreamingResponse(stream, media_type="text/event-stream")

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(path: str, request: Request) -> Any:
        content = await request.body()
        seen = {
            "method": request.method,
            "path": path,
            "query": request.url.query,
            "bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
            "content_type": request.headers.get("content-type"),
            "authorization": request.headers.get("authorization"),
        }
        recorder.requests.append({"body": seen, "headers": dict(request.headers)})
        events = int(request.query_params.get("sse", "0"))
        if not events:
            return JSONResponse(seen, headers={"x-upstream-marker": "recorder"})

        async def stream() -> AsyncIterator[bytes]:
            for i in range(events):
                yield f"data: {json.dumps({'i': i})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


class RecordingUpstream:
    """Runs in a thread of the test process; `base_url` ends in /v1."""

    def __init__(self, port: int | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.cancelled: list[dict[str, Any]] = []
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(
            _app(self),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> RecordingUpstream:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("recording upstream did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def system_messages(self, index: int = -1) -> list[str]:
        messages = self.requests[index]["body"]["messages"]
        return [m["content"] for m in messages if m["role"] == "system"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    recorder = RecordingUpstream(args.port)
    recorder.requests = Discard()
    recorder._server.run()


class Discard(list[dict[str, Any]]):
    """A recording of nothing: a standalone upstream (benchmarks) must not grow."""

    def append(self, item: dict[str, Any]) -> None:
        return None


if __name__ == "__main__":
    main()
