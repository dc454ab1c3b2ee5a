"""Conversion between the memory domain model and bionic.memory.v1 messages."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

from bionic.memory.v1 import memory_pb2 as pb
from bionic_common.memory_types import Exported, Memory, Role, Scope, Tier, TierStats

ROLE_TO_PB = {Role.USER: pb.ROLE_USER, Role.ASSISTANT: pb.ROLE_ASSISTANT}
ROLE_FROM_PB = {v: k for k, v in ROLE_TO_PB.items()}
TIER_TO_PB = {
    Tier.LONG_TERM: pb.TIER_LONG_TERM,
    Tier.SHORT_TERM: pb.TIER_SHORT_TERM,
    Tier.ARCHIVE: pb.TIER_ARCHIVE,
}
TIER_FROM_PB = {v: k for k, v in TIER_TO_PB.items()}
# The trailing metadata of a write refused with RESOURCE_EXHAUSTED because the memory
# service's data disk is (nearly) full, which no retry soon will cure, unlike an overload.
DISK_FULL = ("bionic-refusal", "disk-full")


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """The Struct as JSON data, as json_format.MessageToDict makes it (numbers are floats,
    NaN or infinity is a ValueError) at a fraction of its cost."""
    return {key: _value(value) for key, value in struct.fields.items()}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise ValueError(f"{number} is not a JSON number")
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None  # null_value, or no kind set


def dict_to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


def scope_to_pb(scope: Scope) -> pb.Scope:
    return pb.Scope(tenant=scope.tenant, user=scope.user)


def scope_from_pb(msg: pb.Scope) -> Scope:
    return Scope(tenant=msg.tenant, user=msg.user)


def memory_to_pb(memory: Memory) -> pb.Memory:
    return pb.Memory(
        id=memory.id,
        scope=scope_to_pb(memory.scope),
        role=ROLE_TO_PB[memory.role],
        tier=TIER_TO_PB[memory.tier],
        text=memory.text,
        created_at=memory.created_at,
        updated_at=memory.updated_at,
        strength=memory.strength,
        current_strength=memory.current_strength,
        score=memory.score,
        metadata=dict_to_struct(memory.metadata),
        pinned=memory.pinned,
        expires_at=memory.expires_at or 0.0,
        summary=memory.summary,
        source_ids=memory.source_ids,
    )


def memory_from_pb(msg: pb.Memory) -> Memory:
    return Memory(
        id=msg.id,
        scope=scope_from_pb(msg.scope),
        role=ROLE_FROM_PB[msg.role],
        tier=TIER_FROM_PB[msg.tier],
        text=msg.text,
        created_at=msg.created_at,
        updated_at=msg.updated_at,
        strength=msg.strength,
        current_strength=msg.current_strength,
        score=msg.score,
        metadata=struct_to_dict(msg.metadata),
        pinned=msg.pinned,
        expires_at=msg.expires_at or None,
        summary=msg.summary,
        source_ids=list(msg.source_ids),
    )


def exported_to_pb(item: Exported) -> pb.ExportedMemory:
    return pb.ExportedMemory(memory=memory_to_pb(item.memory), vector=item.vector)


def exported_from_pb(msg: pb.ExportedMemory) -> Exported:
    return Exported(memory=memory_from_pb(msg.memory), vector=list(msg.vector))


def tier_stats_to_pb(stats: TierStats) -> pb.TierStats:
    return pb.TierStats(
        tier=TIER_TO_PB[stats.tier],
        count=stats.count,
        pinned=stats.pinned,
        strength_p10=stats.strength_p10,
        strength_p50=stats.strength_p50,
        strength_p90=stats.strength_p90,
        strength_max=stats.strength_max,
        next_expiries=stats.next_expiries,
    )


def tier_stats_from_pb(msg: pb.TierStats) -> TierStats:
    return TierStats(
        tier=TIER_FROM_PB[msg.tier],
        count=msg.count,
        pinned=msg.pinned,
        strength_p10=msg.strength_p10,
        strength_p50=msg.strength_p50,
        strength_p90=msg.strength_p90,
        strength_max=msg.strength_max,
        next_expiries=list(msg.next_expiries),
    )
