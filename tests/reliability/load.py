"""Simulated users doing streaming turns through the gateway, and a sampler of each
service's resident memory and open file descriptors."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import openai

from bionic_common.memory_types import Role
from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.support.recording_upstream import REPLY, echo_reply
from tests.support.stack import list_memories, wait_for

log = logging.getLogger(__name__)

TOPICS = ["tea", "trains", "violins", "glaciers", "tax forms", "orchids", "chess", "kites"]


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    acknowledged: dict[str, list[str]] = field(default_factory=dict)  # user -> texts
    # Turns by memory outcome (x-bionic-memory without its value): recalled, degraded…
    memory: Counter[str] = field(default_factory=Counter)

    @property
    def turns(self) -> int:
        return len(self.latencies)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def say_text(user: str, turn: int) -> str:
    return f"I am {user}; note {turn}: today I thought about {TOPICS[turn % len(TOPICS)]}."


async def run_users(
    base_url: str,
    key: str,
    users: list[str],
    turns: int,
    result: LoadResult | None = None,
    model: str = "recorder",
    until: threading.Event | None = None,
) -> LoadResult:
    """Every user does `turns` streaming turns one after another (or, with `until`, turns
    until it is set), all users at once. A turn is acknowledged when its whole reply
    arrived; anything else is an error. With the `echo` model each reply is the user's own."""
    result = result or LoadResult()
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60.0)

    async def user_loop(user: str) -> None:
        for turn in itertools.count() if until else range(turns):
            if until and until.is_set():
                return
            text = say_text(user, turn)
            started = time.perf_counter()
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=model,
                    messages=[{"role": "user", "content": text}],
                    user=user,
                    stream=True,
                )
                stream = raw.parse()
                reply = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            except openai.APIError as exc:
                result.errors.append(f"{user} turn {turn}: {type(exc).__name__}: {exc}")
                continue
            if reply != (echo_reply(text) if model == "echo" else REPLY):
                result.errors.append(f"{user} turn {turn}: unexpected reply {reply!r}")
                continue
            result.latencies.append(time.perf_counter() - started)
            result.acknowledged.setdefault(user, []).append(text)
            result.memory[raw.headers.get("x-bionic-memory", "").split("=")[0]] += 1

    try:
        await asyncio.gather(*(user_loop(u) for u in users))
    finally:
        await client.close()
    return result


def assert_stored(
    settings: LauncherSettings, key: str, result: LoadResult, timeout: float = 60
) -> None:
    """Every acknowledged user message is in its user's memories (waiting for the worker)."""
    for user, said in result.acknowledged.items():
        wait_for(
            lambda u=user, s=said: (
                set(s) <= {m.text for m in list_memories(settings, key, u) if m.role == Role.USER}
            ),
            timeout=timeout,
        )


@dataclass
class Sample:
    rss_kb: int
    fds: int


def sample(pid: int) -> Sample | None:
    """VmRSS and the open descriptors of a process, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return Sample(int(line.split()[1]), fds)
    return None


def sample_stack(stack: Stack) -> dict[str, Sample]:
    found = {}
    for name in stack.specs:
        pid = stack.pid(name)
        got = sample(pid) if pid is not None else None
        if got is not None:
            found[name] = got
    return found


class Sampler:
    """Samples every service each `interval` seconds in a thread, at most `limit` times."""

    def __init__(self, stack: Stack, interval: float = 0.5, limit: int = 10_000) -> None:
        self.stack = stack
        self.samples: dict[str, list[Sample]] = {name: [] for name in stack.specs}
        self._interval = interval
        self._limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        for _ in range(self._limit):
            for name, got in sample_stack(self.stack).items():
                self.samples[name].append(got)
            if self._stop.wait(self._interval):
                return

    def peaks(self) -> dict[str, tuple[int, int]]:
        """Each service's highest RSS (MiB) and descriptor count."""
        return {
            name: (max(s.rss_kb for s in got) // 1024, max(s.fds for s in got))
            for name, got in self.samples.items()
            if got
        }


def growth(series: list[float]) -> tuple[float, float]:
    """Mean of the first third and of the last third of a series."""
    third = max(1, len(series) // 3)
    first, last = series[:third], series[-third:]
    return sum(first) / len(first), sum(last) / len(last)
