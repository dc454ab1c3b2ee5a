"""Faults during load, through the launcher-started stack: the memory service killed with
-9, and an upstream that resets, hangs or answers garbage. Chats keep being answered or
fail with clean OpenAI errors, nothing acknowledged is lost, nothing stays stuck."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.reliability.faulty_upstream import FaultyUpstream
from tests.reliability.load import LoadResult, run_users
from tests.support.recording_upstream import REPLY, RecordingUpstream
from tests.support.stack import (
    gateway_url,
    list_memories,
    running_stack,
    stack_settings,
    wait_for,
)

UPSTREAM_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def faulty(recorder: RecordingUpstream) -> Iterator[FaultyUpstream]:
    upstream = FaultyUpstream(recorder.port).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, faulty: FaultyUpstream
) -> Iterator[tuple[LauncherSettings, Stack]]:
    settings = stack_settings(tmp_path_factory.mktemp("faults"), faulty.base_url)
    with pytest.MonkeyPatch.context() as env:  # the services inherit the environment
        env.setenv("BIONIC_GATEWAY_UPSTREAM_TIMEOUT", str(UPSTREAM_TIMEOUT))
        with running_stack(settings) as running:
            yield settings, running


def exported_user_texts(settings: LauncherSettings, key: str, user: str) -> set[str]:
    """The user's own messages in the gateway's export of `user`."""
    reply = httpx.get(
        f"{gateway_url(settings)}/memories/export",
        params={"user": user},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    if reply.status_code == 503:  # memory still catching up after its restart: ask again
        return set()
    assert reply.status_code == 200, reply.text
    lines = [json.loads(line) for line in reply.text.splitlines() if line.strip()]
    return {line["text"] for line in lines if line["role"] == "user"}


def test_memory_killed_with_9_mid_load_loses_no_acknowledged_turn(
    stack: tuple[LauncherSettings, Stack],
) -> None:
    settings, running = stack
    key = "sk-kill-memory"
    users = [f"killed-u{i}" for i in range(8)]
    result = LoadResult()

    # The load runs on a thread; the stack is driven from this one, the thread that
    # started it (a launched service gets SIGTERM when the thread that spawned it exits).
    load = threading.Thread(
        target=lambda: asyncio.run(run_users(gateway_url(settings), key, users, 12, result))
    )
    load.start()
    for _ in range(600):  # until a third of the turns are acknowledged, at most ~60 s
        if result.turns >= 32 or not load.is_alive():
            break
        time.sleep(0.1)
    pid = running.pid("memory")
    running.stop_service("memory", kill=True)
    time.sleep(1.0)  # turns go on while memory is gone
    running.start_service("memory")
    assert running.pid("memory") not in (None, pid)
    load.join(120)
    assert not load.is_alive()
    assert result.errors == []  # chat answers without memory while it is down
    assert result.turns == len(users) * 12

    def missing() -> dict[str, list[str]]:
        return {
            user: sorted(set(said) - exported_user_texts(settings, key, user))
            for user, said in result.acknowledged.items()
            if not set(said) <= exported_user_texts(settings, key, user)
        }

    try:
        wait_for(lambda: not missing(), timeout=60, interval=1)
    except AssertionError:
        direct = {
            u: sorted(set(s) - {m.text for m in list_memories(settings, key, u)})
            for u, s in result.acknowledged.items()
        }
        raise AssertionError(f"missing from export: {missing()}; from memory: {direct}") from None


def chat(settings: LauncherSettings, model: str, stream: bool) -> str:
    client = openai.OpenAI(
        base_url=gateway_url(settings), api_key="sk-faults", max_retries=0, timeout=30
    )
    messages = [{"role": "user", "content": f"hello through {model}"}]
    if not stream:
        reply = client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
        return reply.choices[0].message.content or ""
    chunks = client.chat.completions.create(model=model, messages=messages, stream=True)  # type: ignore[arg-type]
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # type: ignore[union-attr]


FAULT_STATUS = {"reset": 502, "garbage-http": 502, "garbage-sse": 502, "hang": 504}


@pytest.mark.parametrize("fault", list(FAULT_STATUS))
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_faulty_upstream_gives_clean_errors_and_nothing_stays_stuck(
    stack: tuple[LauncherSettings, Stack], faulty: FaultyUpstream, fault: str, stream: bool
) -> None:
    settings, _ = stack
    result = LoadResult()
    hung_before = faulty.hung_up

    async def scenario() -> list[object]:
        load = run_users(gateway_url(settings), "sk-beside-faults", ["b1", "b2", "b3"], 4, result)
        faults = [asyncio.to_thread(chat, settings, fault, stream) for _ in range(3)]
        *outcomes, _ = await asyncio.gather(*faults, load, return_exceptions=True)
        return outcomes

    outcomes = asyncio.run(scenario())
    for outcome in outcomes:
        assert isinstance(outcome, openai.APIError), outcome  # never a reply, never a crash
        if isinstance(outcome, openai.APIStatusError):
            assert outcome.status_code == FAULT_STATUS[fault]
            assert set(outcome.response.json()["error"]) == {"message", "type", "param", "code"}
    assert result.errors == []  # the other users were served all along
    assert chat(settings, "recorder", stream) == REPLY  # and right after
    if fault == "hang":  # the gateway hung up on every stalled upstream call
        wait_for(lambda: faulty.hung_up - hung_before == 3, timeout=10)
