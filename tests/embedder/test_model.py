"""The embedder's vectors against a direct reference, and independent of batching."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from bionic_embedder.config import EmbedderSettings
from bionic_embedder.model import EmbeddingModel, resolve_model_path

TEXTS = [
    "My name is Achen and I love jasmine tea.",
    "What do I like to drink?",
    "hi",
    "The meeting with my sister Lin moved to Thursday because her flight from Hangzhou "
    "was delayed by the typhoon, so we will have dinner at the noodle place instead.",
    "我喜欢茉莉花茶。",
    "🙂 emoji and\ncontrol\tcharacters",
]


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    return EmbeddingModel(EmbedderSettings())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def test_bundled_model_matches_sentence_transformers(model: EmbeddingModel) -> None:
    reference = SentenceTransformer(resolve_model_path(EmbedderSettings().model), device="cpu")
    expected = reference.encode(TEXTS, batch_size=1, normalize_embeddings=True)
    got = model.encode(TEXTS).vectors
    assert got.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosines(got, expected).min() >= 0.9999


def test_vectors_do_not_depend_on_batch_composition(model: EmbeddingModel) -> None:
    alone = np.stack([model.encode([t]).vectors[0] for t in TEXTS])
    together = model.encode(TEXTS).vectors
    reversed_pairs = np.concatenate(
        [model.encode(TEXTS[i : i + 2][::-1]).vectors[::-1] for i in range(0, len(TEXTS), 2)]
    )
    assert cosines(alone, together).min() >= 0.9999
    assert cosines(alone, reversed_pairs).min() >= 0.9999


def test_token_counts_are_real_and_truncated(model: EmbeddingModel) -> None:
    encoded = model.encode(["hi", "word " * 5000])
    assert encoded.tokens[0] == 3  # [CLS] hi [SEP]
    assert encoded.tokens[1] == model.max_tokens == 512
