"""Summaries of long memories: an LLM from an OpenAI-compatible upstream, and a fallback.

The summary becomes the memory's embedded document, so it must stay short. Whatever the
LLM does (fails, times out, rambles past the bound), a summary is always produced: the
fallback cuts the original text at a sentence boundary within the bound.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

PROMPT = (
    "Summarize the following message in one short sentence of at most {chars} characters. "
    "Keep names, numbers, dates and decisions. Reply with the summary only."
)
SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f][\"')\]\u201d\u2019]*(?=\s|$)")


@dataclass(frozen=True, slots=True)
class Summary:
    text: str
    # "llm"; "llm_sentence_cut": the LLM's answer ran over, its whole sentences within the
    # bound are kept; "sentence_cut": the LLM failed, the text itself is cut.
    method: str
    model: str = ""
    fallback_reason: str = ""  # why the LLM's answer was not used

    def metadata(self) -> dict[str, Any]:
        """What the memory's metadata records about how its summary was made."""
        made: dict[str, Any] = {"summary_method": self.method}
        if self.model:
            made["summary_model"] = self.model
        if self.fallback_reason:
            made["summary_fallback_reason"] = self.fallback_reason
        return made


class LLMUnusable(Exception):
    """The upstream gave no usable summary; the message says why."""


@dataclass(frozen=True, slots=True)
class SummaryOptions:
    max_chars: int
    max_tokens: int
    temperature: float
    timeout: float
    model: str | None = None


class Summarizer:
    """Asks an OpenAI-compatible upstream for summaries, within a bound."""

    def __init__(self, base_url: str, options: SummaryOptions, api_key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=options.timeout
        )
        self._options = options
        self._model = options.model

    async def summarize(self, text: str) -> Summary:
        """An LLM summary within the bound, or else the fallback cut (saying why)."""
        try:
            return await self._ask(text)
        except LLMUnusable as exc:
            log.warning("summary falls back to a sentence cut: %s", exc)
            return Summary(
                text=sentence_cut(text, self._options.max_chars),
                method="sentence_cut",
                fallback_reason=str(exc),
            )

    async def _ask(self, text: str) -> Summary:
        o = self._options
        try:
            model = self._model or await self._first_model()
            reply = await self._http.post(
                "/chat/completions",
                json={
                    "model": model,
                    "messages": [
                        {"role": "system", "content": PROMPT.format(chars=o.max_chars)},
                        {"role": "user", "content": text},
                    ],
                    "temperature": o.temperature,
                    "max_tokens": o.max_tokens,
                    "stream": False,
                },
            )
            reply.raise_for_status()
            choice = reply.json()["choices"][0]
            content = choice["message"]["content"]
        except httpx.TimeoutException as exc:
            raise LLMUnusable(f"upstream timed out after {o.timeout:g}s") from exc
        except httpx.HTTPStatusError as exc:
            raise LLMUnusable(f"upstream answered HTTP {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise LLMUnusable(f"upstream unreachable: {type(exc).__name__}") from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMUnusable("upstream answered something that is not a chat completion") from exc
        summary = " ".join(str(content or "").split())
        if not summary:
            raise LLMUnusable("upstream returned an empty summary")
        overrun = ""
        if choice.get("finish_reason") == "length":
            overrun = f"summary ran past {o.max_tokens} tokens"
        elif len(summary) > o.max_chars:
            overrun = f"summary has {len(summary)} characters; the bound is {o.max_chars}"
        if overrun:
            # Keep the LLM's own whole sentences that fit; without one, cut the text.
            summary = whole_sentences(summary, o.max_chars)
            if not summary:
                raise LLMUnusable(f"{overrun}, without a whole sentence within the bound")
        if len(summary) >= len(text):
            raise LLMUnusable("summary is not shorter than the text")
        if overrun:
            return Summary(summary, "llm_sentence_cut", model=model, fallback_reason=overrun)
        return Summary(text=summary, method="llm", model=model)

    async def _first_model(self) -> str:
        """With no model configured, the upstream's first listed model (asked once)."""
        reply = await self._http.get("/models")
        reply.raise_for_status()
        models = reply.json()["data"]
        if not models:
            raise LLMUnusable("upstream lists no model")
        self._model = str(models[0]["id"])
        return self._model

    async def close(self) -> None:
        await self._http.aclose()


def whole_sentences(text: str, max_chars: int) -> str:
    """The longest run of whole sentences from the start that fits in `max_chars`
    (empty when the first sentence is already too long, or unfinished)."""
    flat = " ".join(text.split())
    ends = [m.end() for m in SENTENCE_END.finditer(flat) if m.end() <= max_chars]
    return flat[: ends[-1]] if ends else ""


def sentence_cut(text: str, max_chars: int) -> str:
    """The text if it fits, else its whole sentences that fit in `max_chars`; if even the
    first sentence is too long, its words up to the bound, with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= max_chars:
        return flat
    cut = whole_sentences(flat, max_chars)
    if cut:
        return cut
    head = flat[: max_chars - 1]
    if " " in head:
        head = head[: head.rindex(" ")]
    return head.rstrip(",;:- ") + "…"
