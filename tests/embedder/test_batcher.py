"""The batcher's contract, with a recording model standing in for the model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from bionic_embedder.batcher import INLINE_TOKENIZE_CHARS, Batcher, DeadlineExceeded, QueueFull
from bionic_embedder.metrics import EmbedderMetrics

QUERY = 0  # the token a query starts with, as a query instruction would


class RecordingModel:
    """Tokenizes a text into its characters (one token each), embeds token ids as
    [characters, 1 if a query], and remembers every batch (as texts) it ran."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.backlogs: list[bool] = []  # per pass: whether more texts waited for the next
        self.delay = delay
        self.fail = fail

    def tokenize(self, texts: list[str], query: bool) -> list[np.ndarray]:
        return [np.array([QUERY] * query + [ord(c) for c in t], dtype=np.int64) for t in texts]

    def forward(self, ids: Sequence[np.ndarray], backlog: bool = False) -> np.ndarray:
        self.batches.append(["".join(chr(i) for i in row if i != QUERY) for row in ids])
        self.backlogs.append(backlog)
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        return np.array(
            [[np.count_nonzero(row), 1.0 if row[0] == QUERY else 0.0] for row in ids],
            dtype=np.float32,
        )


def make(model: RecordingModel, **knobs: float) -> Batcher:
    batcher = Batcher(model, EmbedderMetrics(CollectorRegistry()), **knobs)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def test_concurrent_callers_share_forward_passes() -> None:
    model = RecordingModel(delay=0.01)
    batcher = make(model, max_batch_size=16, max_wait=0.005)
    texts = [f"text number {i}" for i in range(40)]
    results = await asyncio.gather(*(batcher.embed([t], query=False) for t in texts))
    await batcher.close()
    for text, result in zip(texts, results, strict=True):
        assert result.vectors[0][0] == len(text)  # every caller got its own vector back
        assert result.tokens == len(text)
    assert len(model.batches) <= 5
    assert max(len(b) for b in model.batches) == 16


async def test_a_pass_knows_whether_more_texts_wait_behind_it() -> None:
    model = RecordingModel(delay=0.05)
    batcher = make(model, max_batch_size=4)
    await batcher.embed(["alone"], query=True)
    busy = asyncio.create_task(batcher.embed(["keeps the model busy"], query=False))
    await asyncio.sleep(0.01)  # the busy pass runs: the ten below all wait behind it
    await asyncio.gather(*(batcher.embed([f"text {i}"], query=False) for i in range(10)))
    await busy
    await batcher.close()
    assert model.backlogs[0] is False  # a lone text: nothing followed it
    assert [len(b) for b in model.batches[2:]] == [4, 4, 2]
    assert model.backlogs[2:] == [True, True, False]


async def test_a_request_keeps_its_order_across_batches() -> None:
    model = RecordingModel()
    batcher = make(model, max_batch_size=3)
    texts = ["a" * n for n in (9, 1, 7, 3, 5, 2, 8)]
    result = await batcher.embed(texts, query=True)
    await batcher.close()
    assert [v[0] for v in result.vectors] == [len(t) for t in texts]
    assert all(v[1] == 1.0 for v in result.vectors)
    assert all(len(b) <= 3 for b in model.batches)


async def test_texts_of_similar_length_are_batched_together() -> None:
    model = RecordingModel()
    batcher = make(model, max_batch_size=2, max_wait=0.01)
    texts = ["x" * 10, "y" * 400, "z" * 12, "w" * 420]
    await asyncio.gather(*(batcher.embed([t], query=False) for t in texts))
    await batcher.close()
    assert sorted(sorted(len(t) for t in b) for b in model.batches) == [[10, 12], [400, 420]]


async def test_max_batch_tokens_bounds_padding() -> None:
    model = RecordingModel()
    batcher = make(model, max_batch_size=64, max_batch_tokens=250, max_wait=0.01)
    texts = ["v" * 100 for _ in range(6)]  # 100 tokens each
    await asyncio.gather(*(batcher.embed([t], query=False) for t in texts))
    await batcher.close()
    assert max(len(b) for b in model.batches) == 2


async def test_short_and_long_texts_waiting_together_get_passes_of_their_own() -> None:
    model = RecordingModel(delay=0.05)
    batcher = make(model, max_batch_size=64, pass_overhead_tokens=128, max_wait=0.01)
    busy = asyncio.create_task(batcher.embed(["keeps the model busy"], query=False))
    await asyncio.sleep(0.01)
    texts = [("s" if i % 2 else "l") * (10 if i % 2 else 100) for i in range(20)]
    await asyncio.gather(*(batcher.embed([t], query=False) for t in texts))
    await busy
    await batcher.close()
    # one pass of 20 would pad the ten short texts to 100 tokens each
    assert sorted(sorted(set(b)) for b in model.batches[1:]) == [["l" * 100], ["s" * 10]]


async def test_a_full_queue_refuses_at_once() -> None:
    model = RecordingModel(delay=0.2)
    batcher = make(model, queue_size=4, max_batch_size=1)
    first = asyncio.create_task(batcher.embed(["a", "b", "c"], query=False))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await batcher.embed(["d", "e"], query=False)
    await first
    await batcher.close()


async def test_a_caller_that_went_away_is_not_embedded() -> None:
    model = RecordingModel(delay=0.1)
    batcher = make(model, max_batch_size=1)
    busy = asyncio.create_task(batcher.embed(["keeps the model busy"], query=False))
    await asyncio.sleep(0.02)
    gone = asyncio.create_task(batcher.embed(["nobody waits for me"], query=False))
    await asyncio.sleep(0.01)
    gone.cancel()
    await busy
    await asyncio.sleep(0.15)
    await batcher.close()
    assert ["nobody waits for me"] not in model.batches


async def test_a_passed_deadline_is_dropped_before_inference() -> None:
    model = RecordingModel(delay=0.1)
    batcher = make(model, max_batch_size=1)
    busy = asyncio.create_task(batcher.embed(["keeps the model busy"], query=False))
    await asyncio.sleep(0.02)
    with pytest.raises(DeadlineExceeded):
        await batcher.embed(["too late"], query=False, deadline=time.monotonic() + 0.01)
    await busy
    await batcher.close()
    assert ["too late"] not in model.batches


async def test_a_failing_pass_fails_its_callers_and_the_batcher_goes_on() -> None:
    model = RecordingModel(fail=True)
    batcher = make(model)
    with pytest.raises(RuntimeError, match="exploded"):
        await batcher.embed(["boom"], query=False)
    model.fail = False
    result = await batcher.embed(["fine"], query=False)
    await batcher.close()
    assert result.vectors[0][0] == 4


async def test_a_lone_caller_is_not_held_for_company() -> None:
    model = RecordingModel()
    batcher = make(model, max_wait=60.0)  # would hang the test if a lone text waited
    for text in ("one", "after", "another"):
        result = await asyncio.wait_for(batcher.embed([text], query=False), 10)
        assert result.batch_size == 1
    await batcher.close()


async def test_under_load_a_batch_waits_to_refill_to_its_last_size() -> None:
    model = RecordingModel()
    batcher = make(model, max_wait=60.0)
    await batcher.embed([f"burst {i}" for i in range(8)], query=False)  # a pass of 8

    async def late_caller(i: int) -> None:
        await asyncio.sleep(0.005 * i)  # arrive one by one, as clients of a busy server do
        await batcher.embed([f"caller {i}"], query=False)

    # the eighth arrival completes the batch: it runs then, not after max_wait
    await asyncio.wait_for(asyncio.gather(*(late_caller(i) for i in range(8))), 10)
    await batcher.close()
    assert model.batches[1] == [f"caller {i}" for i in range(8)]


async def test_queries_and_documents_share_a_pass_and_keep_their_kind() -> None:
    model = RecordingModel(delay=0.05)
    batcher = make(model, max_wait=0.01)
    busy = asyncio.create_task(batcher.embed(["keeps the model busy"], query=False))
    await asyncio.sleep(0.01)
    query, document = await asyncio.gather(
        batcher.embed(["what do I drink?"], query=True),
        batcher.embed(["I drink jasmine tea."], query=False),
    )
    await busy
    await batcher.close()
    assert model.batches[1] == ["what do I drink?", "I drink jasmine tea."]
    assert (query.vectors[0][1], query.tokens) == (1.0, len("what do I drink?") + 1)
    assert (document.vectors[0][1], document.tokens) == (0.0, len("I drink jasmine tea."))


async def test_a_long_request_is_tokenized_off_the_event_loop_in_order() -> None:
    model = RecordingModel()
    batcher = make(model, max_batch_size=8)
    texts = ["w" * (100 + i) for i in range(INLINE_TOKENIZE_CHARS // 100 + 1)]
    result = await batcher.embed(texts, query=False)
    await batcher.close()
    assert [v[0] for v in result.vectors] == [len(t) for t in texts]
    assert result.tokens == sum(len(t) for t in texts)


async def test_a_failing_tokenizer_frees_its_place_in_the_queue() -> None:
    model = RecordingModel()
    batcher = make(model, queue_size=2)

    def broken(texts: list[str], query: bool) -> list[np.ndarray]:
        raise ValueError("cannot tokenize")

    model.tokenize = broken  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="cannot tokenize"):
        await batcher.embed(["a", "b"], query=False)
    assert batcher.depth == 0
    del model.tokenize  # the class's own again
    result = await batcher.embed(["a", "b"], query=False)
    await batcher.close()
    assert [v[0] for v in result.vectors] == [1, 1]
