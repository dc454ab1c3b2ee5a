"""What a request may carry in free-form JSON: only what JSON and the memory store can hold.

Python's `json` (which parses request bodies) accepts `NaN`, `Infinity` and numbers too
large for a double; none can be sent upstream as JSON, nor kept in a protobuf `Struct`
(whose numbers are doubles and whose nesting is bounded). Such a value is a 400 here, not a
500 later."""

from __future__ import annotations

import math
from typing import Any

MAX_METADATA_DEPTH = 32  # well under protobuf's nesting limit of a Struct
MAX_EXACT_INT = 2**53  # a larger integer would not come back as it was stored


def finite_numbers(value: Any) -> Any:
    """`value` if it holds no NaN or infinite number (at any depth), else ValueError."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("NaN and infinite numbers are not JSON")
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


def storable(value: dict[str, Any]) -> dict[str, Any]:
    """`value` if the memory store keeps it exactly: finite numbers, integers a double
    holds exactly, nesting at most MAX_METADATA_DEPTH deep; else ValueError."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"nested deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("NaN and infinite numbers are not JSON")
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_EXACT_INT:
            raise ValueError("integers beyond ±2^53 cannot be stored exactly")
        if isinstance(item, dict):
            pending.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            pending.extend((v, depth + 1) for v in item)
    return value
