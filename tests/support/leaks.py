"""Looking for secrets where they must never be: every stored byte and queued message."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

import redis


def leaked_keys(keys: Iterable[str], data: Path, redis_broker: str | None = None) -> list[str]:
    """Where any of `keys` appears raw: each file under `data` (logs, memories, a SQLite
    broker…) and, with a Redis broker, each message still queued. Empty when none does."""
    found = []
    wanted = [k for k in keys if k]
    for path in (p for p in data.rglob("*") if p.is_file()):
        content = path.read_bytes()
        found += [f"{path}: {k}" for k in wanted if k.encode() in content]
    if redis_broker:
        queued = _queued_payloads(redis.Redis.from_url(redis_broker))
        found += [f"{redis_broker}: {k}" for k in wanted if any(k.encode() in p for p in queued)]
    return found


def _queued_payloads(r: redis.Redis) -> list[bytes]:
    """Every message still in the broker, its base64 body decoded."""
    found = []
    for name in r.scan_iter():
        if r.type(name) != b"list":
            continue
        for raw in r.lrange(name, 0, -1):
            found.append(raw)
            body = json.loads(raw).get("body")
            if isinstance(body, str):
                found.append(base64.b64decode(body))
    return found
