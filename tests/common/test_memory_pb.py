"""The edge conversions of bionic.memory.v1 shared by the memory service and its clients."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from bionic_common.memory_pb import dict_to_struct, struct_to_dict

JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), JSON, max_size=6))
def test_struct_to_dict_is_what_json_format_makes(data: dict[str, Any]) -> None:
    struct = dict_to_struct(data)
    assert struct_to_dict(struct) == json_format.MessageToDict(struct)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_struct_with_a_non_finite_number_is_refused(bad: float) -> None:
    struct = struct_pb2.Struct()
    struct.update({"deep": {"list": [1.0, bad]}})
    with pytest.raises(ValueError):
        struct_to_dict(struct)
