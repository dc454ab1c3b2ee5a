"""The embedder's vectors against direct references, independent of batching, in every
pooling and precision, with the start-up quality gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from bionic_embedder.config import EmbedderSettings
from bionic_embedder.model import EmbeddingModel, PrecisionRefused, resolve_model_path

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
    return EmbeddingModel(EmbedderSettings(precision="fp32"))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def batch_compositions(model: EmbeddingModel, texts: list[str], query: bool) -> list[np.ndarray]:
    """The same texts embedded alone, all together, and in reversed pairs."""
    alone = np.stack([model.encode([t], query).vectors[0] for t in texts])
    together = model.encode(texts, query).vectors
    pairs = np.concatenate(
        [model.encode(texts[i : i + 2][::-1], query).vectors[::-1] for i in range(0, len(texts), 2)]
    )
    return [alone, together, pairs]


def test_bundled_model_matches_sentence_transformers(model: EmbeddingModel) -> None:
    reference = SentenceTransformer(resolve_model_path(EmbedderSettings().model), device="cpu")
    texts = [*TEXTS, "a text far longer than the model's 256 tokens " * 60]
    expected = reference.encode(texts, batch_size=1, normalize_embeddings=True)
    got = model.encode(texts).vectors
    assert got.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosines(got, expected).min() >= 0.9999


def test_vectors_do_not_depend_on_batch_composition(model: EmbeddingModel) -> None:
    alone, *others = batch_compositions(model, TEXTS, query=False)
    for vectors in others:
        assert cosines(alone, vectors).min() >= 0.9999


def test_small_passes_run_on_one_thread_unless_texts_wait_and_large_ones_on_all() -> None:
    two = EmbeddingModel(
        EmbedderSettings(precision="fp32", torch_threads=2, parallel_min_tokens=64)
    )
    short = two.tokenize(["hi there"])  # a handful of padded tokens
    wide = two.tokenize(["word " * 40] * 4)  # 4 texts x ~42 tokens
    alone = two.forward(short)
    assert torch.get_num_threads() == 1
    two.forward(wide)
    assert torch.get_num_threads() == 2
    behind = two.forward(short, backlog=True)  # texts wait: the threads stay in use
    assert torch.get_num_threads() == 2
    two.parallel_min_tokens = 0  # 0: every pass on all threads
    everywhere = two.forward(short)
    assert torch.get_num_threads() == 2
    for vectors in (behind, everywhere):  # the same vectors on one thread as on two
        assert cosines(alone, vectors).min() >= 0.99999


def test_token_counts_are_real_and_truncated(model: EmbeddingModel) -> None:
    encoded = model.encode(["hi", "word " * 5000])
    assert encoded.tokens[0] == 3  # [CLS] hi [SEP]
    # the model's published max_seq_length (sentence_bert_config.json), as sentence-transformers
    assert encoded.tokens[1] == model.max_tokens == 256


def test_token_ids_are_the_transformers_tokenizers(model: EmbeddingModel) -> None:
    texts = [*TEXTS, "a text far longer than the model's 256 tokens " * 60]
    expected = model.tokenizer(texts, truncation=True, max_length=model.max_tokens)["input_ids"]
    assert [ids.tolist() for ids in model.tokenize(texts)] == expected


def last_token_reference(folder: Path, texts: list[str]) -> np.ndarray:
    """Direct transformers: each text alone, unpadded, the last position's hidden state."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    raw = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    rows = []
    with torch.inference_mode():
        for text in texts:
            hidden = raw(**tokenizer([text], return_tensors="pt")).last_hidden_state
            rows.append(torch.nn.functional.normalize(hidden[0, -1], dim=0).numpy())
    return np.stack(rows)


def test_last_token_pooling_with_query_instruction(tiny_qwen3: Path) -> None:
    qwen = EmbeddingModel(EmbedderSettings(model=str(tiny_qwen3), precision="fp32"))
    assert (qwen.pooling, qwen.tokenizer.padding_side) == ("last_token", "left")
    assert qwen.query_instruction and qwen.query_instruction.endswith("Query: ")
    documents = last_token_reference(tiny_qwen3, TEXTS)
    queries = last_token_reference(tiny_qwen3, [qwen.query_instruction + t for t in TEXTS])
    for vectors in batch_compositions(qwen, TEXTS, query=False):
        assert cosines(vectors, documents).min() >= 0.9999
    for vectors in batch_compositions(qwen, TEXTS, query=True):
        assert cosines(vectors, queries).min() >= 0.9999
    assert cosines(documents, queries).max() < 0.99  # the instruction changes queries
    mean = EmbeddingModel(EmbedderSettings(model=str(tiny_qwen3), pooling="mean", precision="fp32"))
    assert cosines(mean.encode(TEXTS).vectors, documents).max() < 0.99


def test_a_configured_query_instruction_is_used(tiny_qwen3: Path) -> None:
    qwen = EmbeddingModel(
        EmbedderSettings(model=str(tiny_qwen3), precision="fp32", query_instruction="Find: ")
    )
    expected = last_token_reference(tiny_qwen3, ["Find: " + t for t in TEXTS[:2]])
    assert cosines(qwen.encode(TEXTS[:2], query=True).vectors, expected).min() >= 0.9999


def test_a_hub_id_loads_from_the_cache_folder(tiny_qwen3: Path, tmp_path: Path) -> None:
    """A hub id resolves through the hub cache layout; offline, nothing is downloaded."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--bionic-test--tiny-qwen3"
    shutil.copytree(tiny_qwen3, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    settings = EmbedderSettings(
        model="bionic-test/tiny-qwen3", cache_dir=str(tmp_path), offline=True, precision="fp32"
    )
    from_hub = EmbeddingModel(settings)
    assert from_hub.model_id == "bionic-test/tiny-qwen3"
    expected = last_token_reference(tiny_qwen3, TEXTS)
    assert cosines(from_hub.encode(TEXTS).vectors, expected).min() >= 0.9999
    with pytest.raises(OSError):  # not in the cache and not allowed to download
        EmbeddingModel(settings.model_copy(update={"model": "bionic-test/absent"}))


# --- precision ---------------------------------------------------------------------------

NATIVE_BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_auto_picks_bf16_on_a_cpu_with_native_bf16() -> None:
    auto = EmbeddingModel(EmbedderSettings())
    assert auto.precision == "bf16"
    assert "avx512_bf16" in auto.cpu_features or "amx_tile" in auto.cpu_features
    assert 0.999 <= auto.quality_min_cosine < 1.0
    assert next(auto.model.parameters()).dtype == torch.bfloat16


def test_auto_picks_fp32_when_native_bf16_is_hidden() -> None:
    auto = EmbeddingModel(EmbedderSettings(hide_cpu_features=["avx512_bf16", "amx_tile"]))
    assert auto.precision == "fp32"
    assert "avx512_bf16" not in auto.cpu_features
    assert auto.quality_min_cosine == 1.0
    assert next(auto.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_each_precision_answers_close_to_fp32_as_gated(
    precision: str, model: EmbeddingModel
) -> None:
    chosen = EmbeddingModel(
        EmbedderSettings(precision=precision, quality_min_cosine=0.9, force_precision=True)
    )
    assert chosen.precision == precision
    got = chosen.encode(TEXTS).vectors
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    # the gate's minimum, measured on its own sentences, bounds these too (with a margin)
    assert cosines(got, model.encode(TEXTS).vectors).min() >= chosen.quality_min_cosine - 0.02


def test_the_quality_gate_refuses_a_precision_under_its_bound() -> None:
    # int8 dynamic quantisation of MiniLM lands well under 0.999 (about 0.91 on its sentences here)
    with pytest.raises(PrecisionRefused, match="int8 reaches a minimum cosine of 0.9"):
        EmbeddingModel(EmbedderSettings(precision="int8"))
    forced = EmbeddingModel(EmbedderSettings(precision="int8", force_precision=True))
    assert forced.quality_min_cosine < 0.999
    assert forced.encode(["still answers"]).vectors.shape == (1, 384)


def test_a_strict_bound_refuses_bf16_too() -> None:
    with pytest.raises(PrecisionRefused, match="bf16"):
        EmbeddingModel(EmbedderSettings(precision="bf16", quality_min_cosine=0.9999999))
