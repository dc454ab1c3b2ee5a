"""Embeddings for benchmarks, computed once per (model settings, kind, text) and kept on disk.

The cache lives under bench/.cache (gitignored): one .npz per embedder configuration,
mapping a text's sha256 to its vector, so a rerun embeds only texts it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bionic_embedder.config import EmbedderSettings
from bionic_embedder.model import EmbeddingModel

log = logging.getLogger(__name__)

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
BATCH = 64


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class EmbedCache:
    """Vectors of texts, by kind (query or document), from one embedder configuration."""

    def __init__(self, settings: EmbedderSettings, cache_dir: Path = CACHE_DIR) -> None:
        self.settings = settings
        fields = {"model", "pooling", "query_instruction", "max_tokens", "precision"}
        key = json.dumps(settings.model_dump(include=fields), sort_keys=True)
        self._path = cache_dir / f"embeddings-{_digest(key)[:16]}.npz"
        self._vectors: dict[str, npt.NDArray[np.float32]] = {}
        if self._path.exists():
            with np.load(self._path) as data:
                self._vectors = {name: data[name] for name in data.files}
        self._model: EmbeddingModel | None = None

    @property
    def model(self) -> EmbeddingModel:
        if self._model is None:
            self._model = EmbeddingModel(self.settings)
        return self._model

    def embed(self, texts: list[str], query: bool) -> npt.NDArray[np.float32]:
        """One L2-normalised row per text; only texts not cached are run through the model."""
        keys = [("q:" if query else "d:") + _digest(t) for t in texts]
        missing = sorted(
            {k: t for k, t in zip(keys, texts, strict=True) if k not in self._vectors}.items(),
            key=lambda kv: len(kv[1]),
        )
        if missing:
            log.info("embedding %d new texts (%s)", len(missing), "queries" if query else "docs")
            for start in range(0, len(missing), BATCH):
                chunk = missing[start : start + BATCH]
                encoded = self.model.encode([t for _, t in chunk], query=query)
                for (k, _), row in zip(chunk, encoded.vectors, strict=True):
                    self._vectors[k] = row.astype(np.float32)
            self._save()
        return np.stack([self._vectors[k] for k in keys])

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text under the embedder's tokenizer (no truncation)."""
        tokenizer = self.model.tokenizer
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp.npz")
        np.savez(tmp, **self._vectors)  # type: ignore[arg-type]
        tmp.replace(self._path)
