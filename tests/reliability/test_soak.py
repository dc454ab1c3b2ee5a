"""Load soak: many simulated users doing streaming turns through the launcher-started
stack (bundled embedder, real memory and worker, recording upstream). No errors, every
acknowledged user message stored, and no service's memory or descriptors keep growing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bionic_common.memory_types import Role
from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.reliability.load import (
    LoadResult,
    Sample,
    Sampler,
    assert_stored,
    growth,
    run_users,
    sample_stack,
)
from tests.support.recording_upstream import RecordingUpstream
from tests.support.stack import gateway_url, list_memories, running_stack, stack_settings, wait_for

log = logging.getLogger(__name__)

RSS_SLACK = 1.25  # the last third of the rounds may use 25 % more than the first third…
RSS_SLACK_MIB = 48  # …plus this much, for allocator and cache noise
FD_SLACK = 8  # plus one per user: idle keep-alive connections come and go


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, recorder: RecordingUpstream
) -> Iterator[tuple[LauncherSettings, Stack]]:
    settings = stack_settings(tmp_path_factory.mktemp("soak"), recorder.base_url)
    with running_stack(settings) as running:
        yield settings, running


def soak(
    settings: LauncherSettings, stack: Stack, key: str, users: int, turns: int, rounds: int
) -> tuple[LoadResult, list[dict[str, Sample]], Sampler]:
    """A warm-up round, then `turns` per user split over `rounds`; each service sampled
    after every round (idle) and all along (peaks)."""
    names = [f"{key}-u{i}" for i in range(users)]
    url = gateway_url(settings)
    warm = asyncio.run(run_users(url, f"{key}-warm", names, 2))
    assert warm.errors == []
    for user in names:  # the worker has stored replies too: its channels are open
        wait_for(
            lambda u=user: any(
                m.role == Role.ASSISTANT for m in list_memories(settings, f"{key}-warm", u)
            ),
            timeout=60,
        )
    result = LoadResult()
    after_round = [sample_stack(stack)]
    with Sampler(stack) as sampler:
        for _ in range(rounds):
            asyncio.run(run_users(url, key, names, turns // rounds, result))
            after_round.append(sample_stack(stack))
    log.info(
        "soak %d users x %d turns: %d turns, %d errors, p50 %.1f ms, p99 %.1f ms, max %.1f ms;"
        " peak (RSS MiB, fds) %s",
        users,
        turns,
        result.turns,
        len(result.errors),
        result.percentile(0.50) * 1000,
        result.percentile(0.99) * 1000,
        max(result.latencies, default=0) * 1000,
        sampler.peaks(),
    )
    return result, after_round, sampler


def assert_bounded(after_round: list[dict[str, Sample]], stack: Stack, users: int) -> None:
    for name in stack.specs:
        rss = [s[name].rss_kb / 1024 for s in after_round]
        fds = [float(s[name].fds) for s in after_round]
        rss_first, rss_last = growth(rss)
        fd_first, fd_last = growth(fds)
        log.info(
            "%s: RSS %.0f -> %.0f MiB, fds %.0f -> %.0f", name, rss_first, rss_last,
            fd_first, fd_last,
        )  # fmt: skip
        assert rss_last <= rss_first * RSS_SLACK + RSS_SLACK_MIB, (name, rss)
        assert fd_last <= fd_first + FD_SLACK + users, (name, fds)


def test_short_soak_has_no_errors_and_no_growth(stack: tuple[LauncherSettings, Stack]) -> None:
    settings, running = stack
    result, after_round, _ = soak(settings, running, "sk-soak-short", users=10, turns=5, rounds=5)
    assert result.errors == []
    assert result.turns == 10 * 5
    assert_bounded(after_round, running, 10)
    assert_stored(settings, "sk-soak-short", result)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_full_soak_has_no_errors_and_no_growth(
    stack: tuple[LauncherSettings, Stack], tmp_path: Path
) -> None:
    settings, running = stack
    result, after_round, _ = soak(settings, running, "sk-soak-full", users=100, turns=50, rounds=10)
    assert_bounded(after_round, running, 100)
    assert_stored(settings, "sk-soak-full", result)
    assert result.errors[:5] == []
    assert result.turns == 100 * 50
