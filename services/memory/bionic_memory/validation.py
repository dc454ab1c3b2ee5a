"""Checks on request input; each failure is an InvalidArgument naming what is wrong."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bionic_common.memory_types import Scope
from bionic_memory.config import MemorySettings
from bionic_memory.errors import InvalidArgument
from bionic_memory.records import is_memory_id

MAX_SCOPE_CHARS = 256


class Validator:
    def __init__(self, settings: MemorySettings) -> None:
        self._settings = settings

    def scope(self, scope: Scope) -> None:
        if not scope.tenant or not scope.user:
            raise InvalidArgument("scope.tenant and scope.user are required")
        for name, value in (("tenant", scope.tenant), ("user", scope.user)):
            if len(value) > MAX_SCOPE_CHARS:
                raise InvalidArgument(f"scope.{name} is longer than {MAX_SCOPE_CHARS} characters")
            if not value.isprintable():
                raise InvalidArgument(f"scope.{name} has a control character")

    def text(self, text: str, what: str = "text") -> None:
        if not text.strip():
            raise InvalidArgument(f"{what} must not be empty")
        if len(text) > self._settings.max_text_chars:
            raise InvalidArgument(
                f"{what} has {len(text)} characters; the limit is {self._settings.max_text_chars}"
            )

    def vector(self, vector: Sequence[float]) -> None:
        if len(vector) != self._settings.dimension:
            raise InvalidArgument(
                f"vector has {len(vector)} dimensions; this store holds {self._settings.dimension}"
            )
        values = np.asarray(vector, dtype=np.float64)
        if not np.isfinite(values).all():
            raise InvalidArgument("vector has a non-finite value")
        if not values.any():
            raise InvalidArgument("vector is all zeros")

    def metadata(self, metadata: dict[str, Any]) -> None:
        try:
            size = len(json.dumps(metadata, allow_nan=False, default=str))
        except ValueError as exc:
            raise InvalidArgument("metadata has a non-finite number") from exc
        if size > self._settings.max_metadata_bytes:
            raise InvalidArgument(
                f"metadata is {size} bytes as JSON; the limit is "
                f"{self._settings.max_metadata_bytes}"
            )

    def memory_id(self, memory_id: str) -> None:
        if not is_memory_id(memory_id):
            raise InvalidArgument(f"id {memory_id[:64]!r} is not a memory id (a UUID)")

    def limit(self, limit: int, default: int, ceiling: int) -> int:
        if limit < 0:
            raise InvalidArgument("limit must not be negative")
        return min(limit or default, ceiling)

    def instant(self, value: float, what: str) -> None:
        if not math.isfinite(value) or value < 0:
            raise InvalidArgument(f"{what} must be a finite, non-negative Unix time")
