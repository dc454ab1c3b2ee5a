"""Vectors on the wire: little-endian float32 bytes, the embedder's packed replies and the
memory service's `packed_vector` fields, read and written the same way by every service."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def packed_f32(vectors: Sequence[float] | np.ndarray) -> bytes:
    """A vector (or the rows of a matrix, one after the other) as little-endian float32."""
    return np.asarray(vectors, dtype="<f4").tobytes()


def unpacked_f32(data: bytes) -> list[float]:
    """The vector of a `packed_vector` field; ValueError when its length is not whole
    float32 values."""
    if len(data) % 4:
        raise ValueError(f"a packed float32 vector of {len(data)} bytes")
    values: list[float] = np.frombuffer(data, dtype="<f4").tolist()
    return values


def unpacked_rows(data: bytes, rows: int, dimension: int) -> np.ndarray:
    """The matrix of `rows` packed vectors of `dimension` values (a read-only view of
    `data`); ValueError when the sizes disagree."""
    if len(data) != 4 * rows * dimension:
        raise ValueError(f"{len(data)} bytes are not {rows} packed vectors of {dimension}")
    return np.frombuffer(data, dtype="<f4").reshape(rows, dimension)
