"""The summary logic directly: the bound, the sentence-boundary fallback, and the LLM
call against upstreams that answer well, err, time out, ramble or talk nonsense."""

from __future__ import annotations

import asyncio

import pytest

from bionic_worker.summary import Summarizer, SummaryOptions, sentence_cut
from tests.worker.faulty_upstream import GOOD_SUMMARY, FaultyUpstream

LONG = (
    "I am planning a trip to Hangzhou in May with my sister. We want to see West Lake "
    "at sunrise, drink Longjing tea in the hills, and take the night train back. "
) * 6
OPTIONS = SummaryOptions(max_chars=200, max_tokens=64, temperature=0.1, timeout=1.0)


def test_a_cut_ends_at_the_last_sentence_that_fits() -> None:
    text = "First one. Second sentence here! Third? Fourth is long enough to spill over."
    assert sentence_cut(text, 40) == "First one. Second sentence here! Third?"
    assert sentence_cut(text, 20) == "First one."


def test_short_text_is_kept_whole_with_whitespace_flattened() -> None:
    assert sentence_cut("  Two\n words. ", 50) == "Two words."


def test_a_first_sentence_over_the_bound_is_cut_at_a_word() -> None:
    cut = sentence_cut("word " * 100, 42)
    assert len(cut) <= 42 and cut.endswith("word…")


def test_decimals_and_abbreviation_dots_without_a_space_are_not_sentence_ends() -> None:
    assert sentence_cut("Pi is 3.14159 and e is 2.71828 roughly. More text follows.", 45) == (
        "Pi is 3.14159 and e is 2.71828 roughly."
    )


def summarize(upstream: FaultyUpstream, text: str = LONG):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        summarizer = Summarizer(upstream.base_url, OPTIONS)
        try:
            return await summarizer.summarize(text)
        finally:
            await summarizer.close()

    return asyncio.run(run())


def test_a_good_llm_answer_is_the_summary() -> None:
    with FaultyUpstream("ok") as upstream:
        summary = summarize(upstream)
    assert summary.text == GOOD_SUMMARY
    assert summary.metadata() == {"summary_method": "llm", "summary_model": "faulty"}


def test_an_llm_answer_over_the_bound_keeps_its_whole_sentences_that_fit() -> None:
    with FaultyUpstream("ramble") as upstream:
        summary = summarize(upstream)
    assert summary.method == "llm_sentence_cut"
    assert summary.text == " ".join(["This goes on and on."] * 9)  # 188 characters
    assert "the bound is 200" in summary.fallback_reason


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("error", "upstream answered HTTP 500"),
        ("slow", "upstream timed out after 1s"),
        ("cut", "summary ran past 64 tokens, without a whole sentence"),
        ("garbage", "not a chat completion"),
    ],
)
def test_an_unusable_llm_answer_falls_back_to_a_sentence_cut(mode: str, reason: str) -> None:
    with FaultyUpstream(mode, delay=5.0) as upstream:
        summary = summarize(upstream)
        assert upstream.calls == 1  # one attempt, no retry loop
    assert summary.method == "sentence_cut"
    assert summary.text == sentence_cut(LONG, 200) and len(summary.text) <= 200
    assert reason in summary.metadata()["summary_fallback_reason"]


def test_an_unreachable_upstream_falls_back() -> None:
    upstream = FaultyUpstream()  # never started: nothing listens on its port
    summary = summarize(upstream)
    assert summary.method == "sentence_cut"
    assert "unreachable" in summary.fallback_reason
