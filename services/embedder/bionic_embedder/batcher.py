"""Dynamic batching: many concurrent callers, few large forward passes.

Knobs (all bounded):
* ``max_batch_size``   — texts per forward pass.
* ``max_batch_tokens`` — padded size of a pass (texts x longest text, in tokens), so one
  long text does not pad a batch of short ones.
* ``max_wait``         — how long the first waiting text may hold the batch open for
  company when the model is idle. It waits only while fewer texts wait than the last pass
  took (so a lone caller runs at once), and while a pass runs the next batch fills for free.
* ``queue_size``       — texts waiting in all; past it `QueueFull` is raised at once.
* ``pass_overhead_tokens`` — the fixed cost of a forward pass, in padded tokens. A batch
  stops growing where the padding a longer text adds costs more than another pass: low
  values cut many tight batches, high values few padded ones.

A caller's texts are tokenized on its own side (inline when short, on the tokenizer pool
when long), so the inference thread only pads token ids and runs the model. That thread
cuts batches itself and starts the next pass as soon as one ends; results go back to the
event loop once per pass. The service runs that loop on the process's main thread
(`run`): torch's OpenMP parallel regions started from any other thread ran its small
operations 1.5-2x slower here (a single-text pass 10.5 instead of 7 ms). Waiting texts
are sorted by length before they are cut into batches, so a batch holds texts of similar
length and pads little. A text whose caller went away (it was cancelled) or whose deadline
passed is dropped before inference.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bionic_embedder.metrics import EmbedderMetrics

# Requests with more characters than this are tokenized on the pool, not on the event loop.
INLINE_TOKENIZE_CHARS = 4096


class QueueFull(Exception):
    """The batcher holds `queue_size` texts already."""


class DeadlineExceeded(Exception):
    """The caller's deadline passed before its texts reached the model."""


class Model(Protocol):
    def tokenize(self, texts: list[str], query: bool) -> list[np.ndarray]: ...

    def forward(self, ids: Sequence[np.ndarray], backlog: bool = False) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: np.ndarray
    tokens: int
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass(slots=True, eq=False)
class _Request:
    """One caller's texts; its future resolves when the last of them is embedded."""

    future: asyncio.Future[EmbedResult]
    size: int
    deadline: float | None
    left: int  # texts not embedded yet
    enqueued: float = field(default_factory=time.monotonic)
    vectors: np.ndarray | None = None
    tokens: int = 0
    queue_s: float = 0.0
    inference_s: float = 0.0
    batch_size: int = 0


@dataclass(slots=True, eq=False)
class _Text:
    request: _Request
    row: int
    ids: np.ndarray


class Batcher:
    def __init__(
        self,
        model: Model,
        metrics: EmbedderMetrics,
        max_batch_size: int = 64,
        max_batch_tokens: int = 16384,
        max_wait: float = 0.002,
        queue_size: int = 4096,
        pass_overhead_tokens: int = 128,
    ) -> None:
        self._model = model
        self._metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait
        self.queue_size = queue_size
        self.pass_overhead_tokens = pass_overhead_tokens
        self._cond = threading.Condition()
        self._pending: list[_Text] = []  # guarded by _cond, as are the two below
        self._waiting = 0  # texts pending or being tokenized: what queue_size bounds
        self._closed = False
        self._expected = 1  # texts the last pass took: how much company is worth waiting for
        self._tokenizers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tokenize")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended = threading.Event()  # the inference loop returned

    def start(self) -> None:
        """Run the inference loop on a thread of its own (for use inside another program;
        the service gives it the main thread: see `run`)."""
        loop = asyncio.get_running_loop()
        threading.Thread(target=self.run, args=(loop,), name="inference", daemon=True).start()

    def run(self, loop: asyncio.AbstractEventLoop) -> None:
        """The inference loop, on the calling thread until `stop`; callers wait on `loop`."""
        self._loop = loop
        try:
            while (batch := self._next_batch()) is not None:
                self._pass(batch)
        finally:
            self._ended.set()

    def stop(self) -> None:
        """Let the inference loop return after the pass in flight (from any thread)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    async def close(self) -> None:
        self.stop()
        if self._loop is not None:
            await asyncio.to_thread(self._ended.wait)  # the pass in flight ends first
        for text in self._pending:
            text.request.future.cancel()
        self._pending.clear()
        self._tokenizers.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return self._waiting

    async def embed(
        self, texts: list[str], query: bool, deadline: float | None = None
    ) -> EmbedResult:
        """Embed `texts` (in order); `deadline` is a time.monotonic() instant."""
        if not texts:
            return EmbedResult(np.zeros((0, 0), np.float32), 0, 0.0, 0.0, 0)
        self._reserve(len(texts))
        try:
            if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
                ids = self._model.tokenize(texts, query)
            else:
                loop = asyncio.get_running_loop()
                ids = await loop.run_in_executor(
                    self._tokenizers, self._model.tokenize, texts, query
                )
        except BaseException:
            self._release(len(texts))
            raise
        future = asyncio.get_running_loop().create_future()
        request = _Request(future, len(texts), deadline, left=len(texts))
        with self._cond:
            self._pending.extend(_Text(request, row, i) for row, i in enumerate(ids))
            self._cond.notify()
        try:
            return await request.future
        finally:
            request.future.cancel()  # the caller went away: what has not run yet is dropped

    def _reserve(self, n: int) -> None:
        with self._cond:
            if self._waiting + n > self.queue_size:
                self._metrics.rejected.labels("queue_full").inc()
                raise QueueFull(f"embedder queue is full ({self.queue_size} texts)")
            self._waiting += n
            self._metrics.queue_depth.set(self._waiting)

    def _release(self, n: int) -> None:
        with self._cond:
            self._waiting -= n
            self._metrics.queue_depth.set(self._waiting)

    # --- the inference thread ------------------------------------------------------------

    def _pass(self, batch: list[_Text]) -> None:
        assert self._loop is not None
        started = time.monotonic()
        try:
            # `_waiting` counts the texts left after this batch was cut: a backlog
            vectors = self._model.forward([t.ids for t in batch], backlog=self._waiting > 0)
        except Exception as exc:  # a failed pass fails its callers, not the batcher
            self._loop.call_soon_threadsafe(self._fail, batch, exc)
            return
        inference_s = time.monotonic() - started
        self._expected = len(batch)
        self._loop.call_soon_threadsafe(self._deliver, batch, vectors, started, inference_s)
        self._observe(batch, started, inference_s)

    def _next_batch(self) -> list[_Text] | None:
        """Wait for texts, hold the door open for company, and cut the next batch."""
        with self._cond:
            while True:
                while not self._closed and not self._live():
                    self._cond.wait()
                # Hold the door for up to `max_wait` after the oldest text arrived, until as
                # many texts wait as the last pass took: a lone caller (last pass: one text)
                # runs at once, so light traffic pays no wait; under load the batch refills.
                target = min(self._expected, self.max_batch_size)
                while not self._closed and len(self._pending) < target:
                    waited = time.monotonic() - self._pending[0].request.enqueued
                    if waited >= self.max_wait:
                        break
                    self._cond.wait(self.max_wait - waited)
                if self._closed:
                    return None
                if self._live():  # again: callers may have gone while the door was open
                    break
            batch = self._take_batch()
            self._waiting -= len(batch)
            self._metrics.queue_depth.set(self._waiting)
            return batch

    def _live(self) -> bool:
        """Drop texts whose caller went away or whose deadline passed; any left?"""
        now = time.monotonic()
        live = []
        for text in self._pending:
            request = text.request
            if request.future.done():
                continue
            if request.deadline is not None and now > request.deadline:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._expire, request)
                continue
            live.append(text)
        self._waiting -= len(self._pending) - len(live)
        self._pending = live
        self._metrics.queue_depth.set(self._waiting)
        return bool(live)

    def _take_batch(self) -> list[_Text]:
        """Cut the next batch from the waiting texts: similar length, bounded, and as
        large as pays: texts join in order of length around the oldest, and the batch is
        the prefix of that order with the most real tokens per padded token, counting each
        pass's fixed cost as `pass_overhead_tokens`."""
        pending = self._pending
        by_length = sorted(pending, key=lambda t: len(t.ids))
        # Start from the oldest text's neighbourhood so nothing starves behind shorter ones.
        oldest = pending[0]
        start = by_length.index(oldest)
        size = len(oldest.ids)
        order: list[_Text] = []
        longest = real = 0
        best, best_value = 0, -1.0
        lo, hi = start, start  # grow a window [lo, hi) of similar lengths around it
        while len(order) < self.max_batch_size and (lo > 0 or hi < len(by_length)):
            take_hi = hi < len(by_length) and (
                lo == 0 or len(by_length[hi].ids) - size <= size - len(by_length[lo - 1].ids)
            )
            candidate = by_length[hi] if take_hi else by_length[lo - 1]
            tokens = len(candidate.ids)
            padded = max(longest, tokens) * (len(order) + 1)
            if order and padded > self.max_batch_tokens:
                break
            longest = max(longest, tokens)
            real += tokens
            order.append(candidate)
            value = real / (self.pass_overhead_tokens + padded)
            if value >= best_value:
                best, best_value = len(order), value
            if take_hi:
                hi += 1
            else:
                lo -= 1
        batch = order[:best]
        chosen = set(map(id, batch))
        self._pending = [t for t in pending if id(t) not in chosen]
        return batch

    def _observe(self, batch: list[_Text], started: float, inference_s: float) -> None:
        m = self._metrics
        m.batch_size.observe(len(batch))
        m.inference_seconds.observe(inference_s)
        m.texts.inc(len(batch))
        m.tokens.inc(sum(len(t.ids) for t in batch))
        m.padded_tokens.inc(len(batch) * max(len(t.ids) for t in batch))
        for text in batch:
            m.queue_seconds.observe(started - text.request.enqueued)

    # --- back on the event loop ----------------------------------------------------------

    def _deliver(
        self, batch: list[_Text], vectors: np.ndarray, started: float, inference_s: float
    ) -> None:
        for text, vector in zip(batch, vectors, strict=True):
            r = text.request
            if r.future.done():
                continue
            if r.vectors is None:
                r.vectors = np.empty((r.size, vectors.shape[1]), dtype=np.float32)
            r.vectors[text.row] = vector
            r.tokens += len(text.ids)
            r.queue_s = max(r.queue_s, started - r.enqueued)
            r.inference_s = max(r.inference_s, inference_s)
            r.batch_size = max(r.batch_size, len(batch))
            r.left -= 1
            if r.left == 0:
                r.future.set_result(
                    EmbedResult(r.vectors, r.tokens, r.queue_s, r.inference_s, r.batch_size)
                )

    @staticmethod
    def _fail(batch: list[_Text], exc: Exception) -> None:
        for text in batch:
            if not text.request.future.done():
                text.request.future.set_exception(exc)

    def _expire(self, request: _Request) -> None:
        if not request.future.done():
            self._metrics.rejected.labels("deadline").inc()
            request.future.set_exception(DeadlineExceeded("deadline passed while queued"))
