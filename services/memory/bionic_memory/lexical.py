"""Lexical (BM25) sparse vectors, so recall matches names and rare words exactly.

Small embedders blur proper nouns: on LoCoMo, MiniLM's cosine alone found 0.47 of the
evidence at 10 memories where BM25 alone found 0.66 (docs/benchmarks.md). Both backends
store a BM25 sparse vector next to the dense one; the engine applies IDF over the stored
memories (Qdrant's `Modifier.IDF`), and this module only tokenises. It uses the Qdrant
engine's own BM25 tokeniser (English stop words and stemming), the same for both backends.
"""

from __future__ import annotations

from typing import Any

import qdrant_edge as qe

LEXICAL = "bm25"  # the sparse vector's name in both backends

_MODEL = qe.Bm25(qe.Bm25Config(language="english"))


def lexical_text(payload: dict[str, Any]) -> str:
    """What a memory is matched on lexically: its text and, if any, its summary."""
    return " ".join(part for part in (payload.get("text", ""), payload.get("summary", "")) if part)


def document_terms(payload: dict[str, Any]) -> tuple[list[int], list[float]]:
    """A stored memory's BM25 term weights, as (indices, values)."""
    sparse = _MODEL.embed_document(lexical_text(payload))
    return list(sparse.indices), list(sparse.values)


def query_terms(text: str) -> tuple[list[int], list[float]]:
    """A query's terms (weight 1 each), as (indices, values)."""
    sparse = _MODEL.embed_query(text)
    return list(sparse.indices), list(sparse.values)
