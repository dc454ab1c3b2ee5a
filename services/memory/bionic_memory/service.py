"""The memory logic: store, reinforce and recall, on any `MemoryStore`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bionic_common.memory_types import Memory, Recall, Role, Scope, Tier
from bionic_memory.config import MemorySettings
from bionic_memory.decay import LONG_TERM, SHORT_TERM, Cooling
from bionic_memory.store.base import MemoryStore, Point, Where

ID_NAMESPACE = uuid.UUID("6f1c2a57-3b0e-4c5e-9a51-bd0f8f1f6a10")
MAX_OP_KEYS = 32  # idempotency keys remembered per memory
LOCK_STRIPES = 64


class InvalidArgument(ValueError):
    """The request cannot be served as asked; nothing was changed."""


class MemoryService:
    def __init__(
        self,
        store: MemoryStore,
        settings: MemorySettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._cooling = {Tier.LONG_TERM: LONG_TERM, Tier.SHORT_TERM: SHORT_TERM}
        # Read-modify-write of one scope's memories is serialised; scopes run in parallel.
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]

    # --- public operations -------------------------------------------------------------

    def recall(
        self,
        scope: Scope,
        text: str,
        vector: Sequence[float],
        limit: int = 0,
        metadata: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Recall:
        """Store the user's message (unless a dry run), then recall what relates to it."""
        self._check_scope(scope)
        self._check_text(text)
        self._check_vector(vector)
        limit = self._check_limit(limit)
        now = self._clock()
        stored = None
        if not dry_run:
            stored, _ = self._write(
                scope, Role.USER, Tier.LONG_TERM, text, vector, metadata or {}, "", now
            )
        where = Where(
            tenant=scope.tenant,
            user=scope.user,
            tier=Tier.LONG_TERM.value,
            exclude_ids=(stored.id,) if stored else (),
        )
        hits = self._store.search(where, vector, limit)
        memories = [self._memory(p, now, score) for p, score in hits]
        memories.sort(key=lambda m: m.created_at)
        return Recall(stored=stored, memories=memories)

    def remember(
        self,
        scope: Scope,
        role: Role,
        text: str,
        vector: Sequence[float],
        metadata: dict[str, Any] | None = None,
        idempotency_key: str = "",
    ) -> tuple[Memory, bool]:
        """Store one memory in long-term memory; same content reinforces the existing one."""
        self._check_scope(scope)
        self._check_text(text)
        self._check_vector(vector)
        return self._write(
            scope,
            role,
            Tier.LONG_TERM,
            text,
            vector,
            metadata or {},
            idempotency_key,
            self._clock(),
        )

    def list_page(
        self, scope: Scope, page_size: int, page_token: str, tier: Tier | None
    ) -> tuple[list[Memory], str]:
        """A page of the scope's memories in a stable order, and the next page's token."""
        self._check_scope(scope)
        size = min(page_size or 50, self._settings.max_page_size)
        offset = self._decode_token(scope, page_token) if page_token else None
        where = Where(tenant=scope.tenant, user=scope.user, tier=tier.value if tier else None)
        points, next_offset = self._store.scroll(where, size, offset)
        now = self._clock()
        token = self._encode_token(scope, next_offset) if next_offset else ""
        return [self._memory(p, now) for p in points], token

    # --- writing -----------------------------------------------------------------------

    def _write(
        self,
        scope: Scope,
        role: Role,
        tier: Tier,
        text: str,
        vector: Sequence[float],
        metadata: dict[str, Any],
        key: str,
        now: float,
    ) -> tuple[Memory, bool]:
        digest = content_hash(text)
        point_id = memory_id(scope, role, tier, digest)
        cooling = self._cooling[tier]
        with self._lock(scope):
            found = self._store.retrieve([point_id])
            if found:
                payload = found[0].payload
                keys: list[str] = list(payload.get("op_keys", []))
                if key and key in keys:
                    return self._memory(found[0], now), False
                strength = cooling.reinforce(payload["strength"], payload["updated_at"], now)
                payload.update(
                    strength=strength,
                    updated_at=now,
                    metadata={**payload.get("metadata", {}), **metadata},
                )
                created = False
            else:
                keys = []
                strength = 1.0
                payload = {
                    "tenant": scope.tenant,
                    "user": scope.user,
                    "role": role.value,
                    "tier": tier.value,
                    "text": text,
                    "content_hash": digest,
                    "created_at": now,
                    "updated_at": now,
                    "strength": strength,
                    "pinned": False,
                    "metadata": metadata,
                }
                created = True
            if key:
                payload["op_keys"] = [*keys, key][-MAX_OP_KEYS:]
            _set_expiry(payload, cooling)
            point = Point(id=point_id, payload=payload, vector=list(vector))
            self._store.upsert([point])
        return self._memory(point, now), created

    def _lock(self, scope: Scope) -> threading.Lock:
        stripe = int.from_bytes(hashlib.blake2b(scope_key(scope).encode(), digest_size=4).digest())
        return self._locks[stripe % LOCK_STRIPES]

    # --- reading -----------------------------------------------------------------------

    def _memory(self, point: Point, now: float, score: float = 0.0) -> Memory:
        p = point.payload
        tier = Tier(p["tier"])
        return Memory(
            id=point.id,
            scope=Scope(tenant=p["tenant"], user=p["user"]),
            role=Role(p["role"]),
            tier=tier,
            text=p["text"],
            created_at=p["created_at"],
            updated_at=p["updated_at"],
            strength=p["strength"],
            current_strength=self._cooling[tier].strength(p["strength"], p["updated_at"], now),
            score=score,
            metadata=p.get("metadata", {}),
        )

    # --- validation --------------------------------------------------------------------

    def _check_scope(self, scope: Scope) -> None:
        if not scope.tenant or not scope.user:
            raise InvalidArgument("scope.tenant and scope.user are required")

    def _check_text(self, text: str) -> None:
        if not text.strip():
            raise InvalidArgument("text must not be empty")
        if len(text) > self._settings.max_text_chars:
            raise InvalidArgument(
                f"text has {len(text)} characters; the limit is {self._settings.max_text_chars}"
            )

    def _check_vector(self, vector: Sequence[float]) -> None:
        if len(vector) != self._settings.dimension:
            raise InvalidArgument(
                f"vector has {len(vector)} dimensions; this store holds {self._settings.dimension}"
            )
        if not all(math.isfinite(x) for x in vector):
            raise InvalidArgument("vector has a non-finite value")
        if not any(vector):
            raise InvalidArgument("vector is all zeros")

    def _check_limit(self, limit: int) -> int:
        if limit < 0:
            raise InvalidArgument("limit must not be negative")
        return min(limit or self._settings.recall_limit, self._settings.max_recall_limit)

    # --- page tokens -------------------------------------------------------------------

    @staticmethod
    def _encode_token(scope: Scope, offset: str) -> str:
        raw = json.dumps({"s": scope_digest(scope), "o": offset}).encode()
        return base64.urlsafe_b64encode(raw).decode()

    @staticmethod
    def _decode_token(scope: Scope, token: str) -> str:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            owner, offset = data["s"], data["o"]
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument("page_token is not a token this service issued") from exc
        if owner != scope_digest(scope) or not isinstance(offset, str):
            raise InvalidArgument("page_token belongs to another listing")
        return offset


def _set_expiry(payload: dict[str, Any], cooling: Cooling) -> None:
    """Pinned memories have no expiry, so no prune filter can ever match them."""
    if payload.get("pinned"):
        payload.pop("expires_at", None)
    else:
        payload["expires_at"] = cooling.expires_at(payload["strength"], payload["updated_at"])


def content_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()


def scope_key(scope: Scope) -> str:
    return f"{scope.tenant}\x1f{scope.user}"


def scope_digest(scope: Scope) -> str:
    return hashlib.sha256(scope_key(scope).encode()).hexdigest()[:16]


def memory_id(scope: Scope, role: Role, tier: Tier, digest: str) -> str:
    """Same speaker, same text, same tier, same scope: same memory (so writes dedupe)."""
    return str(
        uuid.uuid5(ID_NAMESPACE, f"{scope_key(scope)}\x1f{tier.value}\x1f{role.value}\x1f{digest}")
    )
