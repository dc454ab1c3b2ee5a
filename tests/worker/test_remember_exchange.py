"""memory.remember_exchange through a real worker process, on SQLite and on Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bionic_common.clients import EmbedderClient, MemoryClient
from bionic_common.memory_types import Role
from bionic_common.tasks import ExchangeMessage
from bionic_gateway.queue import TaskQueue
from bionic_launcher.config import LauncherSettings
from bionic_worker import logic
from tests.support.recording_upstream import RecordingUpstream
from tests.support.stack import (
    list_memories,
    running_stack,
    stack_settings,
    tenant_of,
    wait_for,
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    recorder = RecordingUpstream().start()
    yield recorder
    recorder.stop()


@pytest.fixture(params=["sqlite", "redis"], scope="module")
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: RecordingUpstream,
) -> Iterator[LauncherSettings]:
    broker = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = stack_settings(tmp_path_factory.mktemp(request.param), upstream.base_url, broker)
    with running_stack(settings):
        yield settings


def broker_of(settings: LauncherSettings) -> str:
    return settings.broker_url or f"sqla+sqlite:///{Path(settings.data_dir, 'broker.sqlite')}"


def message(settings: LauncherSettings, key: str, reply: str, request_id: str) -> ExchangeMessage:
    return ExchangeMessage(
        tenant=tenant_of(settings, key),
        user="u1",
        reply=reply,
        request_id=request_id,
        metadata={"request_id": request_id, "source": "test"},
    )


def test_a_queued_reply_is_stored_once_even_when_delivered_twice(
    stack: LauncherSettings,
) -> None:
    queue = TaskQueue(broker_of(stack))
    try:
        for _ in range(2):  # the same task twice, as a redelivery would
            assert queue.remember_exchange(message(stack, "sk-w", "Jasmine tea it is.", "turn-1"))
        assert queue.remember_exchange(message(stack, "sk-w", "Another reply.", "turn-2"))
    finally:
        queue.close()
    stored = wait_for(lambda: _two(list_memories(stack, "sk-w", "u1")))
    by_text = {m.text: m for m in stored}
    assert set(by_text) == {"Jasmine tea it is.", "Another reply."}
    assert all(m.role == Role.ASSISTANT for m in stored)
    assert by_text["Jasmine tea it is."].strength == 1.0  # applied once, not reinforced
    assert by_text["Jasmine tea it is."].metadata == {"request_id": "turn-1", "source": "test"}


def _two(memories: list) -> list:  # type: ignore[type-arg]
    return memories if len(memories) == 2 else []


def test_the_logic_stores_a_reply_directly(stack: LauncherSettings) -> None:
    async def run() -> None:
        services = logic.Services(
            embedder=EmbedderClient(f"{stack.host}:{stack.embedder_port}"),
            memory=MemoryClient(f"{stack.host}:{stack.memory_port}"),
            timeout=5,
        )
        try:
            memory = await logic.remember_exchange(
                services, message(stack, "sk-direct", "Stored without a queue.", "turn-9")
            )
        finally:
            await services.embedder.close()
            await services.memory.close()
        assert memory.role == Role.ASSISTANT and memory.text == "Stored without a queue."

    asyncio.run(run())
    assert [m.text for m in list_memories(stack, "sk-direct", "u1")] == ["Stored without a queue."]
