"""Relevance-first recall selection: the slots go to what the message is about.

The original selection (recall.py) spends half the slots on the strongest memories,
whatever they are about; measured on LoCoMo that injects less of the evidence than plain
top-k at the same number of memories. Here strength only breaks near-ties: a candidate
ranks by `score + strength_weight * ln(1 + strength)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from bionic_memory.recall import Candidate

T = TypeVar("T")


def priority(candidate: Candidate[T], strength_weight: float) -> float:
    return candidate.score + strength_weight * math.log1p(max(candidate.strength, 0.0))


def relevance_first(
    candidates: Sequence[Candidate[T]], limit: int, strength_weight: float
) -> list[Candidate[T]]:
    """The `limit` candidates of highest priority, oldest first."""
    ranked = sorted(candidates, key=lambda c: priority(c, strength_weight), reverse=True)
    return sorted(ranked[:limit], key=lambda c: c.created_at)
