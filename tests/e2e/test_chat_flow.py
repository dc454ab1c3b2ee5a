"""One chat turn through gateway, embedder, memory and worker, started by the launcher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from bionic_common.memory_types import Memory, Role, Tier
from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.support.recording_upstream import REPLY, RecordingUpstream
from tests.support.stack import (
    gateway_url,
    list_memories,
    running_stack,
    stack_settings,
    wait_for,
)

FACT = "My name is Achen and I love jasmine tea."
QUESTION = "What do I like to drink?"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: RecordingUpstream
) -> Iterator[tuple[LauncherSettings, Stack]]:
    settings = stack_settings(tmp_path_factory.mktemp("stack"), upstream.base_url)
    with running_stack(settings) as running:
        yield settings, running


def client(settings: LauncherSettings, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url(settings), api_key=key, max_retries=0)


def say(c: openai.OpenAI, user: str, text: str, stream: bool) -> str:
    messages = [{"role": "user", "content": text}]
    if stream:
        chunks = c.chat.completions.create(
            model="any",
            messages=messages,
            user=user,
            stream=True,  # type: ignore[arg-type]
        )
        return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    reply = c.chat.completions.create(model="any", messages=messages, user=user)  # type: ignore[arg-type]
    return reply.choices[0].message.content or ""


def memory_prompt(upstream: RecordingUpstream) -> str:
    return "\n".join(upstream.system_messages(-1))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_fact_is_recalled_in_a_new_conversation_for_its_user_only(
    stack: tuple[LauncherSettings, Stack], upstream: RecordingUpstream, stream: bool
) -> None:
    settings, _ = stack
    key = f"sk-owner-{stream}"
    owner = client(settings, key)

    assert say(owner, "u1", FACT, stream) == REPLY
    assert "jasmine" not in memory_prompt(upstream)  # nothing to recall on the first turn

    # A new conversation, no history: the fact comes from memory alone.
    assert say(owner, "u1", QUESTION, stream) == REPLY
    sent = upstream.requests[-1]["body"]
    assert sent["messages"][-1] == {"role": "user", "content": QUESTION}
    assert FACT in memory_prompt(upstream)
    assert "user:" in memory_prompt(upstream)  # with its speaker…
    assert "UTC" in memory_prompt(upstream)  # …and its time

    # Another user of the same key, and the same user name under another key: nothing.
    say(owner, "u2", QUESTION, stream)
    assert "jasmine" not in memory_prompt(upstream)
    say(client(settings, f"sk-stranger-{stream}"), "u1", QUESTION, stream)
    assert "jasmine" not in memory_prompt(upstream)


def test_the_reply_is_stored_by_the_worker_on_sqlite(
    stack: tuple[LauncherSettings, Stack],
) -> None:
    settings, _ = stack
    key = "sk-sqlite-broker"
    say(client(settings, key), "u1", FACT, stream=False)
    stored = wait_for(
        lambda: [m for m in list_memories(settings, key, "u1") if m.role == Role.ASSISTANT]
    )
    assert [m.text for m in stored] == [REPLY]


def test_the_reply_is_stored_by_the_worker_on_redis(
    tmp_path: Path, upstream: RecordingUpstream, redis_url: str
) -> None:
    settings = stack_settings(tmp_path, upstream.base_url, broker_url=redis_url)
    with running_stack(settings):
        key = "sk-redis-broker"
        say(client(settings, key), "u1", FACT, stream=True)
        stored = wait_for(
            lambda: [m for m in list_memories(settings, key, "u1") if m.role == Role.ASSISTANT]
        )
        assert [m.text for m in stored] == [REPLY]


def test_memories_survive_a_restart_of_the_memory_service(
    stack: tuple[LauncherSettings, Stack], upstream: RecordingUpstream
) -> None:
    settings, running = stack
    key = "sk-restart"
    c = client(settings, key)
    for fact in (FACT, "My sister Lin lives in Hangzhou.", "I was born on 3 May 1990."):
        say(c, "u1", fact, stream=False)
    before = wait_for(lambda: _complete(list_memories(settings, key, "u1")))
    pid = running.pid("memory")

    running.stop_service("memory")
    running.start_service("memory")

    assert running.pid("memory") != pid
    after = list_memories(settings, key, "u1")
    assert sorted(_long_term(after)) == sorted(_long_term(before))

    def recalled() -> bool:  # and recall works on the reopened store, once the gateway's
        say(c, "u1", QUESTION, stream=False)  # channel has reconnected (until then: degraded)
        return FACT in memory_prompt(upstream)

    assert wait_for(recalled)


def _long_term(memories: list[Memory]) -> list[tuple[str, str, float]]:
    return [(m.id, m.text, m.created_at) for m in memories if m.tier == Tier.LONG_TERM]


def _complete(memories: list[Memory]) -> list[Memory]:
    """Three user facts and the (deduplicated) assistant reply are all in long-term memory."""
    return memories if len(_long_term(memories)) == 4 else []


BAD_BODIES = {
    "malformed JSON": b'{"model": "x", "messages": [',
    "missing messages": b'{"model": "x"}',
    "empty messages": b'{"model": "x", "messages": []}',
    "content neither string nor parts": (
        b'{"model": "x", "messages": [{"role": "user", "content": 42}]}'
    ),
    "content parts that are not parts": (
        b'{"model": "x", "messages": [{"role": "user", "content": [1, 2]}]}'
    ),
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_requests_get_an_openai_error_and_lose_nothing(
    stack: tuple[LauncherSettings, Stack], body: bytes
) -> None:
    settings, _ = stack
    key = "sk-bad-input"
    say(client(settings, key), "u1", FACT, stream=False)
    before = wait_for(lambda: _settled(list_memories(settings, key, "u1")))

    reply = httpx.post(
        f"{gateway_url(settings)}/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )

    assert reply.status_code == 400
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert httpx.get(gateway_url(settings).removesuffix("/v1") + "/health").status_code == 200
    after = list_memories(settings, key, "u1")
    assert set(_long_term(after)) == set(_long_term(before))


def _settled(memories: list[Memory]) -> list[Memory]:
    return memories if any(m.role == Role.ASSISTANT for m in memories) else []
