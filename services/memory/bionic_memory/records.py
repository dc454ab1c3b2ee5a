"""How memories are laid out in the store: ids, hashes, payload fields, page tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid

from bionic_common.memory_types import Scope
from bionic_memory.errors import InvalidArgument

ID_NAMESPACE = uuid.UUID("6f1c2a57-3b0e-4c5e-9a51-bd0f8f1f6a10")
# The expires_at of a pinned memory: later than any clock, so no prune filter matches it
# and every "still remembered" filter does.
NEVER = 1e18


def exact(number: float) -> float:
    """`number` to 15 significant digits: what the engine reads back exactly. It keeps a
    payload number as decimal text and reads back a longer one with up to one ulp of error
    (1 in 8 full-precision instants came back changed), so a memory's instants and strength
    are stored this way, and what a write returns is what every later read returns."""
    return float(f"{number:.15g}")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()


def scope_key(scope: Scope) -> str:
    return f"{scope.tenant}\x1f{scope.user}"


def scope_digest(scope: Scope) -> str:
    return hashlib.sha256(scope_key(scope).encode()).hexdigest()[:16]


def new_id() -> str:
    return str(uuid.uuid4())


def short_term_id(long_term_id: str) -> str:
    """The id of a long-term memory's copy in short-term memory."""
    return str(uuid.uuid5(ID_NAMESPACE, f"stm\x1f{long_term_id}"))


def rehomed_id(scope: Scope, memory_id: str) -> str:
    """The id an imported memory takes when its own id is held by another scope."""
    return str(uuid.uuid5(ID_NAMESPACE, f"import\x1f{scope_key(scope)}\x1f{memory_id}"))


def is_memory_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def encode_page_token(scope: Scope, offset: str) -> str:
    raw = json.dumps({"s": scope_digest(scope), "o": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_page_token(scope: Scope, token: str) -> str:
    """The offset inside a token, which only the scope it was issued to may use."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        owner, offset = data["s"], data["o"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token is not a token this service issued") from exc
    if owner != scope_digest(scope) or not isinstance(offset, str) or not is_memory_id(offset):
        raise InvalidArgument("page_token belongs to another listing")
    return offset
