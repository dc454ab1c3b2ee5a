"""Named presets of the bionic algorithm's settings (`MemorySettings.preset`).

A preset fills the settings that are not set explicitly. "original" is the original
system's algorithm exactly (DESIGN.md section 2): cluster suppression and a half-relevance,
half-strength split, the single exponential through the 31-day point with its cliff, and
deletion instead of an archive. "default" keeps the field defaults of `MemorySettings`,
each chosen by measurement on bench/locomo_recall.py (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bionic_memory.config import MemorySettings

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "original": {
        "selection": "original",
        "strength_weight": 0.0,
        "lexical_weight": 0.0,
        "reinforcement_temperature": 1.0,
        "reinforcement_gain": 1.0,
        "forgetting_curve": "exponential",
        "archive": False,
        "salience_gain": 0.0,
    },
}

NO_DECAY_DELAY = 1e15  # seconds: a short-term curve point this far away means no cooling


def no_decay(settings: MemorySettings) -> MemorySettings:
    """The same settings with nothing cooling or being forgotten (a benchmark reference)."""
    return settings.model_copy(
        update={"forgetting_curve": "none", "short_term_delay": NO_DECAY_DELAY}
    )
