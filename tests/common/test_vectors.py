from __future__ import annotations

import numpy as np
import pytest

from bionic_common.vectors import packed_f32, unpacked_f32, unpacked_rows


def test_packed_vectors_round_trip_as_little_endian_float32() -> None:
    vector = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    assert packed_f32(vector) == vector.astype("<f4").tobytes()
    assert packed_f32([0.25, -1.5, 3.0]) == packed_f32(vector)
    assert unpacked_f32(packed_f32(vector)) == [0.25, -1.5, 3.0]
    with pytest.raises(ValueError):
        unpacked_f32(b"12345")


def test_a_matrix_packs_row_after_row_and_unpacks_to_its_shape() -> None:
    matrix = np.arange(6, dtype=np.float64).reshape(2, 3) / 4
    rows = unpacked_rows(packed_f32(matrix), 2, 3)
    assert rows.dtype == np.dtype("<f4") and rows.shape == (2, 3)
    assert rows.tolist() == matrix.tolist()
    with pytest.raises(ValueError):
        unpacked_rows(packed_f32(matrix), 3, 3)
