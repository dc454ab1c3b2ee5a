"""Models for the embedder tests, all available offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

from bionic_embedder.config import BUNDLED_MODEL
from bionic_embedder.model import resolve_model_path


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Qwen3 model (Qwen3-Embedding's architecture), saved like a real one.

    No Qwen3 model ships in a package, so this one is built here; it borrows the bundled
    MiniLM tokenizer, whose [SEP] ends every text as Qwen3-Embedding's end token does.
    """
    folder = tmp_path_factory.mktemp("tiny-qwen3")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(BUNDLED_MODEL))
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
    )
    Qwen3Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
