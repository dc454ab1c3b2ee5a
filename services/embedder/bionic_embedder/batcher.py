"""Dynamic batching: many concurrent callers, few large forward passes.

Knobs (all bounded):
* ``max_batch_size``   — texts per forward pass.
* ``max_batch_tokens`` — padded size of a pass (texts x longest text, estimated from
  characters before tokenization), so one long text does not pad a batch of short ones.
* ``max_wait``         — how long the first waiting text may hold the batch open for
  company when the model is idle. It waits only while fewer texts wait than the last pass
  took (so a lone caller runs at once), and while a pass runs the next batch fills for free.
* ``queue_size``       — texts waiting in all; past it `QueueFull` is raised at once.

Waiting texts are sorted by length before they are cut into batches, so a batch holds
texts of similar length and pads little. A text whose caller went away (its future was
cancelled) or whose deadline passed is dropped before inference.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from bionic_embedder.metrics import EmbedderMetrics
from bionic_embedder.model import Encoded

CHARS_PER_TOKEN = 4  # planning estimate only; usage comes from the real tokenization


class QueueFull(Exception):
    """The batcher holds `queue_size` texts already."""


class DeadlineExceeded(Exception):
    """The caller's deadline passed before its texts reached the model."""


@dataclass(frozen=True, slots=True)
class BatchTiming:
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass(slots=True)
class _Item:
    text: str
    query: bool
    deadline: float | None
    future: asyncio.Future[tuple[np.ndarray, int, BatchTiming]]
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def est_tokens(self) -> int:
        return len(self.text) // CHARS_PER_TOKEN + 2


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: np.ndarray
    tokens: int
    queue_s: float
    inference_s: float
    batch_size: int


Encoder = Callable[[list[str], bool], Encoded]


class Batcher:
    def __init__(
        self,
        encode: Encoder,
        metrics: EmbedderMetrics,
        max_batch_size: int = 64,
        max_batch_tokens: int = 16384,
        max_wait: float = 0.002,
        queue_size: int = 4096,
        max_tokens_per_text: int = 512,
    ) -> None:
        self._encode = encode
        self._metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait
        self.queue_size = queue_size
        self._max_tokens_per_text = max_tokens_per_text
        self._pending: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None
        self._expected = 1  # texts the last pass took: how much company is worth waiting for

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._pending:
            item.future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def embed(
        self, texts: list[str], query: bool, deadline: float | None = None
    ) -> EmbedResult:
        """Embed `texts` (in order); `deadline` is a time.monotonic() instant."""
        if len(self._pending) + len(texts) > self.queue_size:
            self._metrics.rejected.labels("queue_full").inc()
            raise QueueFull(f"embedder queue is full ({self.queue_size} texts)")
        loop = asyncio.get_running_loop()
        items = [_Item(t, query, deadline, loop.create_future()) for t in texts]
        self._pending.extend(items)
        self._metrics.queue_depth.set(len(self._pending))
        self._wakeup.set()
        try:
            results = await asyncio.gather(*(i.future for i in items))
        finally:
            for item in items:  # the caller went away: drop what has not run yet
                if not item.future.done():
                    item.future.cancel()
        vectors = np.stack([r[0] for r in results]) if results else np.zeros((0, 0), np.float32)
        return EmbedResult(
            vectors=vectors,
            tokens=sum(r[1] for r in results),
            queue_s=max(r[2].queue_s for r in results) if results else 0.0,
            inference_s=max(r[2].inference_s for r in results) if results else 0.0,
            batch_size=max(r[2].batch_size for r in results) if results else 0,
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._gather_company()
            batch = self._take_batch()
            if not batch:
                continue
            started = time.monotonic()
            try:
                encoded = await loop.run_in_executor(
                    self._executor, self._encode, [i.text for i in batch], batch[0].query
                )
            except Exception as exc:  # a failed pass fails its callers, not the batcher
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            inference_s = time.monotonic() - started
            self._expected = len(batch)
            self._record(batch, encoded, started, inference_s)

    async def _gather_company(self) -> None:
        """Hold the door open for up to `max_wait` after the oldest text arrived, until as
        many texts wait as the last pass took. A lone caller (last pass: one text) runs at
        once, so light traffic pays no wait; under load the batch refills to its size."""
        target = min(self._expected, self.max_batch_size)
        while len(self._pending) < target:
            remaining = self.max_wait - (time.monotonic() - self._pending[0].enqueued)
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Item]:
        """Cut the next batch from the waiting texts: same kind, similar length, bounded."""
        now = time.monotonic()
        live: list[_Item] = []
        for item in self._pending:
            if item.future.done():
                continue
            if item.deadline is not None and now > item.deadline:
                self._metrics.rejected.labels("deadline").inc()
                item.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                continue
            live.append(item)
        if not live:
            self._pending = []
            self._metrics.queue_depth.set(0)
            return []
        kind = live[0].query
        same = sorted((i for i in live if i.query == kind), key=lambda i: len(i.text))
        # Start from the oldest text's neighbourhood so nothing starves behind shorter ones.
        oldest = live[0]
        start = same.index(oldest)
        batch: list[_Item] = []
        longest = 0
        lo, hi = start, start  # grow a window [lo, hi) of similar lengths around it
        while len(batch) < self.max_batch_size and (lo > 0 or hi < len(same)):
            take_hi = hi < len(same) and (
                lo == 0
                or len(same[hi].text) - len(oldest.text)
                <= len(oldest.text) - len(same[lo - 1].text)
            )
            candidate = same[hi] if take_hi else same[lo - 1]
            tokens = min(candidate.est_tokens, self._max_tokens_per_text)
            if batch and max(longest, tokens) * (len(batch) + 1) > self.max_batch_tokens:
                break
            longest = max(longest, tokens)
            batch.append(candidate)
            if take_hi:
                hi += 1
            else:
                lo -= 1
        chosen = {id(i) for i in batch}
        self._pending = [i for i in live if id(i) not in chosen]
        self._metrics.queue_depth.set(len(self._pending))
        return batch

    def _record(
        self, batch: list[_Item], encoded: Encoded, started: float, inference_s: float
    ) -> None:
        m = self._metrics
        m.batch_size.observe(len(batch))
        m.inference_seconds.observe(inference_s)
        m.texts.inc(len(batch))
        m.tokens.inc(sum(encoded.tokens))
        for item, vector, tokens in zip(batch, encoded.vectors, encoded.tokens, strict=True):
            queue_s = started - item.enqueued
            m.queue_seconds.observe(queue_s)
            if not item.future.done():
                item.future.set_result(
                    (vector, tokens, BatchTiming(queue_s, inference_s, len(batch)))
                )
