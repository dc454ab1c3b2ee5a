"""The gateway's OpenAI surface end to end: the launcher-started system (real embedder,
memory and worker) in front of the recording upstream, driven by the official openai
Python and Node.js clients."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.support.leaks import leaked_keys
from tests.support.recording_upstream import REPLY, RETRY_AFTER, TOOL_CALL, USAGE, RecordingUpstream
from tests.support.stack import gateway_url, logged_stack, stack_settings, wait_for

NODE_DIR = Path(__file__).parent / "node"
UPSTREAM_KEY = "sk-upstream-secret-7f3a"
UPSTREAM_TIMEOUT = 3.0
MAX_BODY = 1 << 20
HISTORY_MESSAGES = 3  # client messages sent on besides the system ones, with memories
FACT = "My name is Achen and I love jasmine tea."
QUESTION = "What do I like to drink?"


@dataclass
class Gateway:
    settings: LauncherSettings
    stack: Stack
    upstream: RecordingUpstream
    data: Path
    keys: set[str] = field(default_factory=set)  # every client key used, for the leak test

    @property
    def url(self) -> str:
        return gateway_url(self.settings)

    def client(self, key: str) -> openai.OpenAI:
        self.keys.add(key)
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0)

    def http(self, key: str) -> httpx.Client:
        self.keys.add(key)
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=30
        )

    def sent(self, index: int = -1) -> dict[str, Any]:
        body: dict[str, Any] = self.upstream.requests[index]["body"]
        return body


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Gateway]:
    # A database of its own: another stack's worker must not take this stack's tasks.
    broker = redis_url.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(broker).flushdb()
    upstream = RecordingUpstream().start()
    data = tmp_path_factory.mktemp("gateway-api")
    settings = stack_settings(data, upstream.base_url, broker_url=broker).model_copy(
        update={"upstream_api_key": UPSTREAM_KEY}
    )
    stack = logged_stack(
        settings,
        {
            "BIONIC_GATEWAY_UPSTREAM_TIMEOUT": str(UPSTREAM_TIMEOUT),
            # Generous: a loaded 2-core machine must not turn recall tests into degraded ones.
            "BIONIC_GATEWAY_MEMORY_DEADLINE": "3",
            "BIONIC_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
            "BIONIC_GATEWAY_HISTORY_MESSAGES": str(HISTORY_MESSAGES),
            # Import keeps timestamps: admin keys only (tests/security checks the refusal).
            "BIONIC_GATEWAY_ADMIN_KEYS": json.dumps(["sk-rest", "sk-tenant-b"]),
        },
    )
    try:
        stack.start()
        yield Gateway(settings, stack, upstream, data)
    finally:
        stack.stop()
        upstream.stop()


def user_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] != "system"]


# --- chat completions: everything memory does not touch passes through -------------------


def test_every_openai_field_reaches_the_upstream_as_sent(gw: Gateway) -> None:
    parts = [
        {"type": "text", "text": "My cat is called Miso."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    fields: dict[str, Any] = {
        "n": 2,
        "seed": 7,
        "stop": ["\n\n"],
        "logprobs": True,
        "top_logprobs": 2,
        "temperature": 0.3,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "none",
    }
    reply = gw.client("sk-fields").chat.completions.with_raw_response.create(
        model="recorder",
        messages=[{"role": "user", "content": parts}],  # type: ignore[list-item]
        user="u1",
        extra_body={"vendor_extra": {"keep": "me"}},
        **fields,
    )
    completion = reply.parse()
    assert [c.message.content for c in completion.choices] == [REPLY, REPLY]
    assert reply.headers["x-bionic-memory"].startswith("recalled=")
    assert reply.headers["x-request-id"]
    sent = gw.sent()
    assert {k: sent[k] for k in fields} == fields
    assert sent["vendor_extra"] == {"keep": "me"} and sent["user"] == "u1"
    assert user_messages(sent) == [{"role": "user", "content": parts}]  # image part intact
    assert sent["model"] == "recorder"
    assert gw.upstream.requests[-1]["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"

    # The text part was remembered: the next turn recalls it, the image did not count.
    gw.client("sk-fields").chat.completions.create(
        model="recorder",
        messages=[{"role": "user", "content": "What is my cat called?"}],
        user="u1",
    )
    memory = "\n".join(gw.upstream.system_messages())
    assert "Miso" in memory and "base64" not in memory


def test_stream_with_include_usage_and_the_memory_header(gw: Gateway) -> None:
    c = gw.client("sk-stream")
    with c.chat.completions.with_streaming_response.create(
        model="recorder",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-bionic-memory"].startswith("recalled=")
        chunks = list(response.parse())
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == REPLY
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == USAGE["total_tokens"]
    assert gw.sent()["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_tool_calls_pass_through(gw: Gateway, stream: bool) -> None:
    c = gw.client("sk-tools")
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    messages: Any = [{"role": "user", "content": "Weather in Hangzhou?"}]
    if stream:
        chunks = list(
            c.chat.completions.create(model="tools", messages=messages, tools=tools, stream=True)
        )
        calls = [
            call for ch in chunks if ch.choices for call in ch.choices[0].delta.tool_calls or []
        ]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    else:
        reply = c.chat.completions.create(model="tools", messages=messages, tools=tools)
        calls = reply.choices[0].message.tool_calls or []  # type: ignore[assignment]
        assert reply.choices[0].finish_reason == "tool_calls"
    assert [(x.id, x.function.name, x.function.arguments) for x in calls] == [  # type: ignore[union-attr]
        (TOOL_CALL["id"], "get_weather", '{"city": "Hangzhou"}')
    ]
    assert gw.sent()["tools"] == tools

    # A tool result turn goes upstream as sent, tool message and all.
    follow_up: Any = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": TOOL_CALL["id"], "content": "sunny, 24°C"},
    ]
    c.chat.completions.create(model="recorder", messages=follow_up, tools=tools)
    assert user_messages(gw.sent()) == follow_up


def test_with_memories_only_the_last_messages_go_upstream(gw: Gateway) -> None:
    c = gw.client("sk-history")
    c.chat.completions.create(
        model="recorder",
        messages=[{"role": "user", "content": "My boat is called Wren."}],
        user="h1",
    )
    conversation: Any = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Plan a sail."},
        {"role": "assistant", "content": "Where to?"},
        {"role": "user", "content": "Weather in Hangzhou first."},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": TOOL_CALL["id"], "content": "sunny, 24°C"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "What is my boat called?"},
    ]
    reply = c.chat.completions.with_raw_response.create(
        model="recorder", messages=conversation, user="h1"
    )
    assert reply.headers["x-bionic-memory"] != "recalled=0"
    sent = gw.sent()["messages"]
    assert sent[0] == conversation[0] and "Wren" in sent[1]["content"]
    # The last three, reaching back to the call of the tool result at the cut.
    assert sent[2:] == conversation[4:]


@pytest.mark.parametrize("status", [401, 404, 429, 500])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_errors_reach_the_client_as_they_were(
    gw: Gateway, status: int, stream: bool
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        gw.client("sk-errors").chat.completions.create(
            model=f"fail-{status}",
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,  # type: ignore[call-overload]
        )
    error = caught.value
    assert error.status_code == status
    assert error.body == {
        "message": f"recorder says {status}",
        "type": "upstream_test_error",
        "param": None,
        "code": f"code_{status}",
    }
    assert error.response.headers["x-upstream-marker"] == "recorder"
    if status == 429:
        assert error.response.headers["retry-after"] == RETRY_AFTER
        assert error.response.headers["x-ratelimit-reset-requests"] == "7s"


def test_an_upstream_timeout_is_a_504(gw: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        gw.client("sk-timeout").chat.completions.create(
            model="hang", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "timeout"  # type: ignore[index]


def test_a_stream_that_breaks_ends_with_an_error_event(gw: Gateway) -> None:
    chunks = gw.client("sk-break").chat.completions.create(
        model="break-stream", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    seen = []
    with pytest.raises(openai.APIError, match="broke off its stream"):
        for chunk in chunks:
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["Noted!"]


def test_a_client_leaving_mid_stream_cancels_the_upstream_call(gw: Gateway) -> None:
    before = len(gw.upstream.cancelled)
    body = {"model": "slow-stream", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with gw.http("sk-leave") as http, http.stream("POST", "/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        first = next(reply.iter_lines())
        assert first.startswith("data: ")
    # The upstream would stream for a minute; the gateway hangs up on it at once.
    wait_for(lambda: len(gw.upstream.cancelled) > before, timeout=10)


# --- per-request memory controls -----------------------------------------------------------


def test_memory_off_read_only_and_recall_size(gw: Gateway) -> None:
    key = "sk-controls"
    c = gw.client(key)
    for fact in (FACT, "My sister Lin lives in Hangzhou.", "I drink oolong at night."):
        c.chat.completions.create(
            model="recorder", messages=[{"role": "user", "content": fact}], user="c1"
        )
    with gw.http(key) as http:
        wait_for(lambda: _count(http, "c1") >= 4)  # three facts and the (deduplicated) reply
        stored = _count(http, "c1")

        off = c.chat.completions.with_raw_response.create(
            model="recorder",
            messages=[{"role": "user", "content": "Secret: my PIN is 0000. " + QUESTION}],
            user="c1",
            extra_body={"bionic_memory": {"mode": "off"}},
        )
        assert off.headers["x-bionic-memory"] == "off"
        assert gw.upstream.system_messages() == [] and "bionic_memory" not in gw.sent()

        read_only = c.chat.completions.with_raw_response.create(
            model="recorder",
            messages=[{"role": "user", "content": "Between us: " + QUESTION}],
            user="c1",
            extra_headers={"x-bionic-memory-mode": "read-only", "x-bionic-recall-limit": "1"},
        )
        assert read_only.headers["x-bionic-memory"] == "recalled=1; read-only"
        memory_lines = gw.upstream.system_messages()[0].splitlines()
        assert len([line for line in memory_lines if line.startswith("- [")]) == 1
        assert _count(http, "c1") == stored  # neither question nor reply was stored
        texts = [m["text"] for m in http.get("/memories", params={"user": "c1"}).json()["data"]]
        assert not any("PIN" in t or "Between us" in t for t in texts)

        bad = c.chat.completions.with_raw_response
        with pytest.raises(openai.BadRequestError):
            bad.create(
                model="recorder",
                messages=[{"role": "user", "content": "x"}],
                extra_headers={"x-bionic-memory-mode": "sometimes"},
            )


def _count(http: httpx.Client, user: str) -> int:
    """The user's long-term memories: what a stored message or reply adds to (short-term
    copies come and go with the worker's reinforcement of earlier replies)."""
    params = {"user": user, "limit": 100, "tier": "ltm"}
    return len(http.get("/memories", params=params).json()["data"])


# --- everything else under /v1 ---------------------------------------------------------------


def test_other_v1_paths_pass_through_streaming_and_bounded(gw: Gateway) -> None:
    c = gw.client("sk-other")
    completion = c.completions.create(model="recorder", prompt="Say hi")
    assert completion.model_extra is not None and completion.model_extra["path"] == "completions"
    assert completion.model_extra["method"] == "POST" and completion.model_extra["bytes"] > 0
    assert gw.upstream.requests[-1]["body"]["authorization"] == f"Bearer {UPSTREAM_KEY}"

    upload = os.urandom(256 * 1024)
    with gw.http("sk-other") as http:
        reply = http.post(
            "/files?purpose=test", content=upload, headers={"content-type": "application/x-bin"}
        )
        assert reply.status_code == 200 and reply.headers["x-upstream-marker"] == "recorder"
        seen = reply.json()
        assert (seen["method"], seen["path"], seen["query"]) == ("POST", "files", "purpose=test")
        assert seen["bytes"] == len(upload)
        assert seen["sha256"] == hashlib.sha256(upload).hexdigest()

        with http.stream("GET", "/audio/anything", params={"sse": 3}) as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in events.iter_lines() if line]
        assert lines == ['data: {"i": 0}', 'data: {"i": 1}', 'data: {"i": 2}', "data: [DONE]"]

        too_big = http.post("/files", content=b"x" * (MAX_BODY + 1))
        assert too_big.status_code == 413
        assert too_big.json()["error"]["type"] == "invalid_request_error"


def test_models_come_from_the_upstream(gw: Gateway) -> None:
    assert [m.id for m in gw.client("sk-models").models.list().data] == ["recorder"]


# --- the official Node.js client ----------------------------------------------------------------


def test_the_openai_node_client_works_unchanged(gw: Gateway) -> None:
    node = shutil.which("node")
    assert node, "node is needed for the Node.js client test (make test installs its deps)"
    result = subprocess.run(
        [node, str(NODE_DIR / "chat.mjs")],
        env={**os.environ, "GATEWAY_URL": gw.url, "API_KEY": "sk-node"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["plain"]["contents"] == [REPLY, REPLY]
    assert seen["plain"]["memory"].startswith("recalled=")
    assert seen["stream"] == {"text": REPLY, "usage": USAGE}
    assert [(t["id"], t["function"]["name"]) for t in seen["tools"]] == [
        (TOOL_CALL["id"], "get_weather")
    ]
    assert [t["function"]["name"] for t in seen["stream_tools"]] == ["get_weather"]
    assert seen["error"]["status"] == 429 and seen["error"]["retry_after"] == RETRY_AFTER
    assert seen["error"]["body"]["code"] == "code_429"
    plain = next(
        r["body"]
        for r in gw.upstream.requests
        if r["body"].get("seed") == 7 and r["body"].get("user") == "node-user"
    )
    assert plain["vendor_extra"] == {"keep": "me"}
    assert plain["response_format"] == {"type": "json_object"} and plain["n"] == 2
    assert user_messages(plain)[0]["content"][1]["type"] == "image_url"


# --- the memory management API ----------------------------------------------------------------


def _all(http: httpx.Client, user: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"user": user, "limit": 2}
    while True:
        page = http.get("/memories", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        found.extend(body["data"])
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return found
        params["after"] = body["next_cursor"]


FACTS = [
    "I am allergic to peanuts.",
    "My daughter Mei starts school in September.",
    "I work as a nurse in Suzhou.",
    "My favourite film is Spirited Away.",
    "I run 5 km every Saturday morning.",
]


def test_the_memory_api_round_trip(gw: Gateway) -> None:
    with gw.http("sk-rest") as http:
        added = [http.post("/memories", json={"user": "r1", "text": t}) for t in FACTS]
        assert {a.status_code for a in added} == {201}
        first = added[0].json()
        assert (first["object"], first["user"], first["role"], first["tier"]) == (
            "memory", "r1", "user", "ltm"
        )  # fmt: skip

        listed = _all(http, "r1")  # two at a time: the cursor walks every page
        assert sorted(m["text"] for m in listed if m["tier"] == "ltm") == sorted(FACTS)
        assert len({m["id"] for m in listed}) == len(listed)

        got = http.get(f"/memories/{first['id']}", params={"user": "r1"}).json()
        cooling = ("current_strength", "expires_at")
        assert {k: v for k, v in got.items() if k not in cooling} == {
            k: v for k, v in first.items() if k not in cooling
        }
        assert got["expires_at"] == pytest.approx(first["expires_at"])

        found = http.post(
            "/memories/search", json={"user": "r1", "query": "food allergy", "limit": 2}
        ).json()["data"]
        assert found[0]["text"] == FACTS[0] and found[0]["score"] > found[1]["score"]

        # The preview is what chat injects, and it stores nothing.
        messages = [{"role": "user", "content": "Can I eat satay sauce?"}]
        before = sorted(m["id"] for m in _all(http, "r1"))
        preview = http.post(
            "/memories/recall", json={"user": "r1", "messages": messages, "recall_limit": 3}
        ).json()
        assert sorted(m["id"] for m in _all(http, "r1")) == before
        assert FACTS[0] in preview["system_message"]["content"]
        assert preview["messages"] == [preview["system_message"], *messages]
        gw.client("sk-rest").chat.completions.create(
            model="recorder",
            messages=messages,  # type: ignore[arg-type]
            user="r1",
            extra_body={"bionic_memory": {"mode": "read_only", "recall_limit": 3}},
        )
        assert gw.upstream.system_messages() == [preview["system_message"]["content"]]

        patched = http.patch(
            f"/memories/{first['id']}",
            params={"user": "r1"},
            json={"text": "I am allergic to peanuts and shellfish.", "pinned": True},
        ).json()
        assert patched["pinned"] and patched["expires_at"] is None
        assert patched["text"].endswith("shellfish.") and patched["id"] == first["id"]
        hit = http.post("/memories/search", json={"user": "r1", "query": "shellfish"}).json()
        assert hit["data"][0]["id"] == first["id"]  # re-embedded with its new text

        stats = http.get("/memories/stats", params={"user": "r1"}).json()
        ltm = next(t for t in stats["tiers"] if t["tier"] == "ltm")
        assert ltm["count"] == len(FACTS) and ltm["pinned"] == 1

        exported = http.get("/memories/export", params={"user": "r1"})
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in exported.text.splitlines()]
        assert len(lines) == len(before) and all(len(line["vector"]) > 0 for line in lines)

        gone = lines[1]["id"]
        deleted = http.delete(f"/memories/{gone}", params={"user": "r1"})
        assert deleted.json() == {"id": gone, "object": "memory.deleted", "deleted": True}
        assert http.get(f"/memories/{gone}", params={"user": "r1"}).status_code == 404
        assert http.delete(f"/memories/{gone}", params={"user": "r1"}).status_code == 404

        forgotten = http.delete("/memories", params={"user": "r1"}).json()
        assert forgotten["deleted"] == len(before) - 1 and _all(http, "r1") == []

        # Import restores them (as another user too), times and metadata as they were;
        # a line without a vector is embedded again.
        lines[0]["metadata"] = {"source": "backup"}
        del lines[2]["vector"]
        body = "\n".join(json.dumps(line) for line in lines) + "\n"
        result = http.post("/memories/import", params={"user": "r2"}, content=body).json()
        assert (result["imported"], result["skipped"]) == (len(lines), 0)
        restored = {m["id"]: m for m in _all(http, "r2")}
        for line in lines:
            got = restored[line["id"]]
            assert (got["text"], got["created_at"], got["updated_at"], got["user"]) == (
                line["text"], line["created_at"], line["updated_at"], "r2"
            )  # fmt: skip
        assert restored[lines[0]["id"]]["metadata"]["source"] == "backup"

        bad = http.post("/memories/import", params={"user": "r2"}, content=b'{"id": 1}\n')
        assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("line 1")


def test_no_endpoint_reaches_another_tenant_or_user(gw: Gateway) -> None:
    with gw.http("sk-tenant-a") as a, gw.http("sk-tenant-b") as b:
        mine = a.post("/memories", json={"user": "shared", "text": "My bank PIN hint is owl."})
        mine_id = mine.json()["id"]
        a.post("/memories", json={"user": "other", "text": "I collect stamps."})
        exported = a.get("/memories/export", params={"user": "shared"}).text

        for http, user in ((b, "shared"), (a, "other")):  # another tenant; another user
            assert all(m["id"] != mine_id and "owl" not in m["text"] for m in _all(http, user))
            assert http.get(f"/memories/{mine_id}", params={"user": user}).status_code == 404
            patch = http.patch(f"/memories/{mine_id}", params={"user": user}, json={"pinned": True})
            assert patch.status_code == 404
            assert http.delete(f"/memories/{mine_id}", params={"user": user}).status_code == 404
            found = http.post("/memories/search", json={"user": user, "query": "bank PIN owl"})
            assert all("owl" not in m["text"] for m in found.json()["data"])
            preview = http.post(
                "/memories/recall",
                json={"user": user, "messages": [{"role": "user", "content": "my PIN hint?"}]},
            ).json()
            assert all("owl" not in m["text"] for m in preview["memories"])
            assert "owl" not in http.get("/memories/export", params={"user": user}).text
        assert b.delete("/memories", params={"user": "shared"}).json()["deleted"] == 0
        tiers = b.get("/memories/stats", params={"user": "shared"}).json()["tiers"]
        assert sum(t["count"] for t in tiers) == 0
        assert _all(b, "shared") == []

        # Importing A's export as B lands in B's tenant and leaves A's memory alone.
        assert b.post("/memories/import", params={"user": "shared"}, content=exported).is_success
        b.delete("/memories", params={"user": "shared"})
        again = a.get(f"/memories/{mine_id}", params={"user": "shared"})
        assert again.status_code == 200 and again.json()["text"] == "My bank PIN hint is owl."


# --- graceful degradation ---------------------------------------------------------------------


@pytest.mark.parametrize("service", ["embedder", "memory"])
def test_chat_goes_on_without_memory_and_memory_comes_back(gw: Gateway, service: str) -> None:
    key = f"sk-degraded-{service}"
    c = gw.client(key)
    gateway_pid = gw.stack.pid("gateway")
    said = f"I keep bees on my roof ({service})."
    gw.stack.stop_service(service)
    try:
        plain = c.chat.completions.with_raw_response.create(
            model="recorder", messages=[{"role": "user", "content": said}], user="d1"
        )
        assert plain.headers["x-bionic-memory"] == "degraded"
        assert plain.parse().choices[0].message.content == REPLY
        with c.chat.completions.with_streaming_response.create(
            model="recorder",
            messages=[{"role": "user", "content": "Still there?"}],
            user="d1",
            stream=True,
        ) as streamed:
            assert streamed.headers["x-bionic-memory"] == "degraded"
            assert (
                "".join(ch.choices[0].delta.content or "" for ch in streamed.parse() if ch.choices)
                == REPLY
            )
        metrics = httpx.get(gw.url.removesuffix("/v1") + "/metrics").raise_for_status().text
        assert "bionic_gateway_memory_degraded_total{" in metrics
    finally:
        gw.stack.start_service(service)

    def remembers() -> bool:
        reply = c.chat.completions.with_raw_response.create(
            model="recorder", messages=[{"role": "user", "content": "What do I keep?"}], user="d1"
        )
        return reply.headers["x-bionic-memory"] != "degraded" and said in "\n".join(
            gw.upstream.system_messages()
        )

    # Without a gateway restart memory answers again, and the user turn it missed was
    # queued and stored by the worker meanwhile, so it is recalled.
    wait_for(remembers, timeout=60, interval=1)
    assert gw.stack.pid("gateway") == gateway_pid


# --- the OpenAPI document, fuzzed --------------------------------------------------------------


FUZZ_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """Import bodies: a generated string is sent as it is, anything else as one JSON line."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode() + b"\n"


def test_generated_requests_get_no_5xx_and_match_the_schema(gw: Gateway) -> None:
    """Schemathesis cases for every operation of /openapi.json (explicit examples first)."""
    schema = schemathesis.openapi.from_url(gw.url.removesuffix("/v1") + "/openapi.json")
    headers = {"authorization": "Bearer sk-fuzz"}
    gw.keys.add("sk-fuzz")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/memories/{memory_id}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
            database=None,
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=FUZZ_CHECKS)

        run()


# --- secrets ------------------------------------------------------------------------------------


def test_keys_never_reach_logs_or_stored_data(gw: Gateway) -> None:
    """Runs last: every key this module used, and the upstream's, is looked for in every
    service log and every stored byte (memories, task queue payloads)."""
    gateway_log = (gw.data / "logs" / "gateway.log").read_bytes()
    assert b"no API keys configured" in gateway_log  # open mode is announced
    assert b"request_id=" in gateway_log and b"route=/v1/chat/completions" in gateway_log
    keys = {r["headers"].get("authorization", "") for r in gw.upstream.requests}
    assert keys == {f"Bearer {UPSTREAM_KEY}"}  # the clients' keys never went upstream
    used = {UPSTREAM_KEY, *gw.keys}
    assert any("memory" in p.parts for p in gw.data.rglob("*") if p.is_file())
    assert leaked_keys(used, gw.data, gw.settings.broker_url) == []
