"""The gateway app in-process, in front of the recording upstream, with no embedder or
memory service running: auth, configuration and the edges that need no memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bionic_common.memory_types import Memory, Role, Scope, Tier
from bionic_gateway.app import create_app
from bionic_gateway.auth import TenantResolver, load_keys
from bionic_gateway.chat.prompt import MemoryPrompt, recent
from bionic_gateway.config import GatewaySettings
from tests.support.ports import free_port
from tests.support.recording_upstream import REPLY, RecordingUpstream
from tests.support.stack import wait_for

CHAT = {"model": "recorder", "messages": [{"role": "user", "content": "hello"}]}


def settings(upstream: RecordingUpstream, **overrides: Any) -> GatewaySettings:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: memory is down
    base: dict[str, Any] = {
        "upstream_base_url": upstream.base_url,
        "embedder_target": dead,
        "memory_target": dead,
        "broker_url": "memory://",
        "tenant_salt": "test-salt",
        "memory_deadline": 0.05,
    }
    return GatewaySettings(**{**base, **overrides})


def gateway(s: GatewaySettings) -> TestClient:
    return TestClient(create_app(s), raise_server_exceptions=False)


def test_configured_keys_only_from_file_and_env(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"sk-file": "acme"}))
    s = settings(upstream, api_keys_file=str(keys), api_keys={"sk-env": "globex"})
    assert load_keys(s) == {"sk-file": "acme", "sk-env": "globex"}
    with gateway(s) as c:
        for key in ("sk-file", "sk-env"):
            ok = c.post(
                "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
            )
            assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == REPLY
        for headers in ({"authorization": "Bearer sk-wrong"}, {}):
            for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                                 ("GET", "/v1/memories"), ("POST", "/v1/files")):  # fmt: skip
                denied = c.request(method, path, json=CHAT, headers=headers)
                assert denied.status_code == 401, path
                assert denied.json()["error"] == {
                    "message": "invalid API key",
                    "type": "authentication_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
    resolver = TenantResolver(load_keys(s), "salt")
    assert (resolver.tenant("Bearer sk-file"), resolver.tenant("bearer sk-env")) == (
        "acme",
        "globex",
    )


def test_a_bad_keys_file_stops_the_start(upstream: RecordingUpstream, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(["sk-1"]))
    with pytest.raises(ValueError, match="key: tenant"):
        create_app(settings(upstream, api_keys_file=str(keys)))


def test_open_mode_tenants_are_salted_hashes_of_the_key() -> None:
    a, b = TenantResolver({}, "salt-a"), TenantResolver({}, "salt-b")
    tenant = a.tenant("Bearer sk-secret")
    assert tenant.startswith("t_") and "sk-secret" not in tenant
    assert tenant == a.tenant("Bearer sk-secret") != a.tenant("Bearer sk-other")
    assert tenant != b.tenant("Bearer sk-secret")  # the salt is what makes it unguessable
    assert "sk-secret" not in repr(a.caller("Bearer sk-secret"))


def test_open_mode_is_warned_once_at_start_and_not_with_keys(
    upstream: RecordingUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    warning = "no API keys configured: the gateway is open, one tenant per key"
    with caplog.at_level("WARNING", logger="bionic_gateway"):
        create_app(settings(upstream, api_keys={"sk-a": "acme"}))
        assert warning not in caplog.messages
        create_app(settings(upstream))
        TenantResolver({}, "salt").tenant("Bearer sk-b")  # resolving does not warn again
    assert caplog.messages.count(warning) == 1


@pytest.mark.parametrize("passthrough", [False, True], ids=["server-key", "client-key"])
def test_the_upstream_key_is_the_servers_or_the_clients(
    upstream: RecordingUpstream, passthrough: bool
) -> None:
    s = settings(upstream, upstream_api_key="sk-server", upstream_key_passthrough=passthrough)
    with gateway(s) as c:
        c.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-client"})
        chat = upstream.requests[-1]["headers"]["authorization"]
        c.post(
            "/v1/completions", json={"model": "m"}, headers={"authorization": "Bearer sk-client"}
        )
        other = upstream.requests[-1]["headers"]["authorization"]
    expected = "Bearer sk-client" if passthrough else "Bearer sk-server"
    assert chat == other == expected


@pytest.mark.parametrize("content_type", ["application/x-bin", None], ids=["typed", "untyped"])
def test_a_passed_through_body_keeps_its_content_type_or_its_lack_of_one(
    upstream: RecordingUpstream, content_type: str | None
) -> None:
    body = b"\x00raw upload\xff"
    headers = {"content-type": content_type} if content_type else {}
    with gateway(settings(upstream)) as c:
        seen = c.post("/v1/files", content=body, headers=headers).json()
    assert seen["content_type"] == content_type
    assert seen["bytes"] == len(body)


def test_memory_down_means_degraded_not_failed(upstream: RecordingUpstream) -> None:
    with gateway(settings(upstream)) as c:
        reply = c.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 200 and reply.headers["x-bionic-memory"] == "degraded"
        off = c.post("/v1/chat/completions", json=CHAT, headers={"x-bionic-memory-mode": "off"})
        assert off.headers["x-bionic-memory"] == "off"
        queued = (
            'bionic_gateway_tasks_queued_total{outcome="queued",task="memory.remember_user_turn"}'
            " 1.0"
        )  # published on the queue's own thread, after the response

        def published() -> str:
            text = c.get("/metrics").text
            return text if queued in text else ""

        metrics = wait_for(published)
    assert 'bionic_gateway_memory_degraded_total{reason="' in metrics
    assert 'bionic_gateway_chat_turns_total{memory="degraded",stream="false"} 1.0' in metrics
    assert 'bionic_gateway_stage_seconds_count{stage="upstream_first_byte"} 2.0' in metrics


def test_memory_api_answers_503_when_memory_is_down(upstream: RecordingUpstream) -> None:
    with gateway(settings(upstream, memory_timeout=0.2)) as c:
        reply = c.get("/v1/memories", params={"user": "u1"})
    assert reply.status_code == 503 and reply.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("header", "value"),
    [("x-bionic-memory-mode", "sometimes"), ("x-bionic-recall-limit", "0"),
     ("x-bionic-recall-limit", "many")],
)  # fmt: skip
def test_bad_memory_controls_are_400(upstream: RecordingUpstream, header: str, value: str) -> None:
    with gateway(settings(upstream)) as c:
        reply = c.post("/v1/chat/completions", json=CHAT, headers={header: value})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == header


def test_models_fall_back_to_configuration(upstream: RecordingUpstream) -> None:
    s = settings(
        upstream, upstream_base_url=f"http://127.0.0.1:{free_port()}/v1", models=["a", "b"]
    )
    with gateway(s) as c:
        listed = c.get("/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["a", "b"] and listed["object"] == "list"


def test_request_ids_cors_and_body_limit(upstream: RecordingUpstream) -> None:
    s = settings(upstream, cors_origins=["https://chat.example"], max_body_bytes=2048)
    with gateway(s) as c:
        mine = c.get("/health", headers={"x-request-id": "client-id-1"})
        assert mine.headers["x-request-id"] == "client-id-1"
        odd = c.get("/health", headers={"x-request-id": "bad id\n"}).headers["x-request-id"]
        assert odd != "bad id\n" and len(odd) == 32
        preflight = c.options(
            "/v1/chat/completions",
            headers={"origin": "https://chat.example", "access-control-request-method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://chat.example"
        other = c.get("/health", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        big = c.post("/v1/chat/completions", content=b"{" + b" " * 4096 + b"}")
        assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
    with gateway(settings(upstream)) as c:  # no origins configured: no CORS at all
        assert (
            "access-control-allow-origin"
            not in c.get("/health", headers={"origin": "https://chat.example"}).headers
        )


MEMORY = Memory(
    id="m1",
    scope=Scope("t", "u"),
    role=Role.USER,
    tier=Tier.LONG_TERM,
    text="I love  jasmine\ntea.",
    created_at=0.0,
    updated_at=0.0,
    strength=1.0,
)


def test_prompt_templates_english_chinese_and_custom(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    english = MemoryPrompt.from_settings(settings(upstream))
    chinese = MemoryPrompt.from_settings(settings(upstream, prompt_language="zh"))
    assert english.line(MEMORY) == "- [1970-01-01 00:00] user: I love jasmine tea."
    assert chinese.line(MEMORY) == "- [1970-01-01 00:00] 用户: I love jasmine tea."
    assert "Do not invent facts" in str(english.message([MEMORY]))
    assert "不要编造" in str(chinese.message([MEMORY]))
    template = tmp_path / "prompt.txt"
    template.write_text("Known about the user:\n{memories}\nEnd.", encoding="utf-8")
    custom = MemoryPrompt.from_settings(settings(upstream, prompt_template_file=str(template)))
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    injected = custom.inject(messages, [MEMORY])
    assert injected[1] == {
        "role": "system",
        "content": "Known about the user:\n- [1970-01-01 00:00] user: I love jasmine tea.\nEnd.",
    }
    assert [injected[0], *injected[2:]] == messages and custom.inject(messages, []) == messages
    with pytest.raises(ValueError, match="memories"):
        MemoryPrompt.from_settings(settings(upstream, prompt_template="no placeholder"))


def said(role: str, text: str, **extra: object) -> dict[str, object]:
    return {"role": role, "content": text, **extra}


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
CONVERSATION = [
    said("system", "Be brief."),
    said("user", "u1"),
    said("assistant", "a1"),
    said("user", "u2"),
    said("assistant", None, tool_calls=[CALL]),  # type: ignore[arg-type]
    said("tool", "r1", tool_call_id="call_1"),
    said("tool", "r2", tool_call_id="call_1"),
    said("developer", "Answer in French."),
    said("assistant", "a2"),
    said("user", "u3"),
]


@pytest.mark.parametrize(
    ("keep", "kept"),
    [
        (1, ["Be brief.", "Answer in French.", "u3"]),
        (2, ["Be brief.", "Answer in French.", "a2", "u3"]),
        # A cut at a tool result reaches back to the call, past the other result.
        (3, ["Be brief.", None, "r1", "r2", "Answer in French.", "a2", "u3"]),
        (5, ["Be brief.", None, "r1", "r2", "Answer in French.", "a2", "u3"]),
        (6, ["Be brief.", "u2", None, "r1", "r2", "Answer in French.", "a2", "u3"]),
        (20, [m["content"] for m in CONVERSATION]),
    ],
)
def test_recent_keeps_system_messages_and_whole_tool_calls(keep: int, kept: list[object]) -> None:
    assert [m["content"] for m in recent(CONVERSATION, keep)] == kept


def test_recent_never_drops_the_latest_user_message() -> None:
    tail = [said("user", "u1"), said("assistant", None, tool_calls=[CALL]),  # type: ignore[arg-type]
            said("tool", "r1", tool_call_id="call_1")]  # fmt: skip
    assert recent([said("user", "u0"), said("assistant", "a0"), *tail], 1) == tail


def test_history_is_cut_only_when_memories_are_injected(upstream: RecordingUpstream) -> None:
    prompt = MemoryPrompt.from_settings(settings(upstream, history_messages=2))
    assert prompt.inject(CONVERSATION, []) == CONVERSATION
    assert [m["content"] for m in prompt.inject(CONVERSATION, [MEMORY])] == [
        "Be brief.",
        "Answer in French.",  # now leading: the memories come after it
        prompt.message([MEMORY])["content"],  # type: ignore[index]
        "a2",
        "u3",
    ]


def test_the_last_request_id_header_is_the_one_kept(upstream: RecordingUpstream) -> None:
    with gateway(settings(upstream)) as c:
        reply = c.get("/health", headers=[("x-request-id", "first"), ("x-request-id", "last")])
    assert reply.headers.get_list("x-request-id") == ["last"]
