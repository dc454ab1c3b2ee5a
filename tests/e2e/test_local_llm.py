"""The same stack with the bundled llama.cpp SmolLM2 as its zero-configuration upstream."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from bionic_launcher.config import LauncherSettings
from bionic_launcher.services import SMOLLM2_ALIAS
from tests.support.stack import gateway_url, running_stack, stack_settings


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherSettings]:
    settings = stack_settings(tmp_path_factory.mktemp("llm-stack"), upstream_base_url=None)
    with running_stack(settings) as running:
        assert "llm" in running.specs
        yield settings


def test_models_come_from_the_local_server(local_stack: LauncherSettings) -> None:
    c = openai.OpenAI(base_url=gateway_url(local_stack), api_key="sk-local", max_retries=0)
    assert SMOLLM2_ALIAS in [m.id for m in c.models.list().data]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_smollm2_answers_through_the_gateway(local_stack: LauncherSettings, stream: bool) -> None:
    c = openai.OpenAI(base_url=gateway_url(local_stack), api_key="sk-local", max_retries=0)
    messages = [{"role": "user", "content": "My name is Achen. Say hello to me."}]
    if stream:
        chunks = list(
            c.chat.completions.create(
                model=SMOLLM2_ALIAS,
                messages=messages,
                max_tokens=16,
                stream=True,  # type: ignore[arg-type]
            )
        )
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    else:
        reply = c.chat.completions.create(
            model=SMOLLM2_ALIAS,
            messages=messages,
            max_tokens=16,  # type: ignore[arg-type]
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
        text = reply.choices[0].message.content or ""
    assert text.strip()
