"""The batcher's contract, with a recording encoder standing in for the model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from bionic_embedder.batcher import Batcher, DeadlineExceeded, QueueFull
from bionic_embedder.metrics import EmbedderMetrics
from bionic_embedder.model import Encoded


class RecordingEncoder:
    """Encodes a text as [len(text), 1] and remembers every batch it was given."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail = fail

    def __call__(self, texts: list[str], query: bool) -> Encoded:
        self.batches.append(list(texts))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        vectors = np.array([[len(t), 1.0 if query else 0.0] for t in texts], dtype=np.float32)
        return Encoded(vectors=vectors, tokens=[len(t) for t in texts])


def make(encoder: RecordingEncoder, **knobs: float) -> Batcher:
    batcher = Batcher(encoder, EmbedderMetrics(CollectorRegistry()), **knobs)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def test_concurrent_callers_share_forward_passes() -> None:
    encoder = RecordingEncoder(delay=0.01)
    batcher = make(encoder, max_batch_size=16, max_wait=0.005)
    texts = [f"text number {i}" for i in range(40)]
    results = await asyncio.gather(*(batcher.embed([t], query=False) for t in texts))
    await batcher.close()
    for text, result in zip(texts, results, strict=True):
        assert result.vectors[0][0] == len(text)  # every caller got its own vector back
        assert result.tokens == len(text)
    assert len(encoder.batches) <= 5
    assert max(len(b) for b in encoder.batches) == 16


async def test_a_request_keeps_its_order_across_batches() -> None:
    encoder = RecordingEncoder()
    batcher = make(encoder, max_batch_size=3)
    texts = ["a" * n for n in (9, 1, 7, 3, 5, 2, 8)]
    result = await batcher.embed(texts, query=True)
    await batcher.close()
    assert [v[0] for v in result.vectors] == [len(t) for t in texts]
    assert all(v[1] == 1.0 for v in result.vectors)
    assert all(len(b) <= 3 for b in encoder.batches)


async def test_texts_of_similar_length_are_batched_together() -> None:
    encoder = RecordingEncoder()
    batcher = make(encoder, max_batch_size=2, max_wait=0.01)
    texts = ["x" * 10, "y" * 400, "z" * 12, "w" * 420]
    await asyncio.gather(*(batcher.embed([t], query=False) for t in texts))
    await batcher.close()
    assert sorted(sorted(len(t) for t in b) for b in encoder.batches) == [[10, 12], [400, 420]]


async def test_max_batch_tokens_bounds_padding() -> None:
    encoder = RecordingEncoder()
    batcher = make(encoder, max_batch_size=64, max_batch_tokens=300, max_wait=0.01)
    texts = ["v" * 400 for _ in range(6)]  # ~102 estimated tokens each
    await asyncio.gather(*(batcher.embed([t], query=False) for t in texts))
    await batcher.close()
    assert max(len(b) for b in encoder.batches) == 2


async def test_a_full_queue_refuses_at_once() -> None:
    encoder = RecordingEncoder(delay=0.2)
    batcher = make(encoder, queue_size=4, max_batch_size=1)
    first = asyncio.create_task(batcher.embed(["a", "b", "c"], query=False))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await batcher.embed(["d", "e"], query=False)
    await first
    await batcher.close()


async def test_a_caller_that_went_away_is_not_embedded() -> None:
    encoder = RecordingEncoder(delay=0.1)
    batcher = make(encoder, max_batch_size=1)
    busy = asyncio.create_task(batcher.embed(["keeps the model busy"], query=False))
    await asyncio.sleep(0.02)
    gone = asyncio.create_task(batcher.embed(["nobody waits for me"], query=False))
    await asyncio.sleep(0.01)
    gone.cancel()
    await busy
    await asyncio.sleep(0.15)
    await batcher.close()
    assert ["nobody waits for me"] not in encoder.batches


async def test_a_passed_deadline_is_dropped_before_inference() -> None:
    encoder = RecordingEncoder(delay=0.1)
    batcher = make(encoder, max_batch_size=1)
    busy = asyncio.create_task(batcher.embed(["keeps the model busy"], query=False))
    await asyncio.sleep(0.02)
    with pytest.raises(DeadlineExceeded):
        await batcher.embed(["too late"], query=False, deadline=time.monotonic() + 0.01)
    await busy
    await batcher.close()
    assert ["too late"] not in encoder.batches


async def test_a_failing_pass_fails_its_callers_and_the_batcher_goes_on() -> None:
    encoder = RecordingEncoder(fail=True)
    batcher = make(encoder)
    with pytest.raises(RuntimeError, match="exploded"):
        await batcher.embed(["boom"], query=False)
    encoder.fail = False
    result = await batcher.embed(["fine"], query=False)
    await batcher.close()
    assert result.vectors[0][0] == 4


async def test_a_lone_caller_is_not_held_for_company() -> None:
    encoder = RecordingEncoder()
    batcher = make(encoder, max_wait=60.0)  # would hang the test if a lone text waited
    for text in ("one", "after", "another"):
        result = await asyncio.wait_for(batcher.embed([text], query=False), 10)
        assert result.batch_size == 1
    await batcher.close()


async def test_under_load_a_batch_waits_to_refill_to_its_last_size() -> None:
    encoder = RecordingEncoder()
    batcher = make(encoder, max_wait=60.0)
    await batcher.embed([f"burst {i}" for i in range(8)], query=False)  # a pass of 8

    async def late_caller(i: int) -> None:
        await asyncio.sleep(0.005 * i)  # arrive one by one, as clients of a busy server do
        await batcher.embed([f"caller {i}"], query=False)

    # the eighth arrival completes the batch: it runs then, not after max_wait
    await asyncio.wait_for(asyncio.gather(*(late_caller(i) for i in range(8))), 10)
    await batcher.close()
    assert encoder.batches[1] == [f"caller {i}" for i in range(8)]
