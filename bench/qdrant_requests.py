"""Requests the memory service sends a Qdrant server per chat turn.

    .venv/bin/python bench/qdrant_requests.py [--turns 20] [--history 60]

On the server backend every store call is a round trip the turn waits for, so their count
is what its memory work costs beyond the server's own time. The service runs in-process on
qdrant-client's local mode, which answers the same client calls a server would; each call
is counted. A user first gets `--history` turns (a Recall of the message, then the
Remember of the reply with reinforcement, as the gateway and the worker make them); the
next `--turns` are counted. Deterministic: the counts do not depend on the machine.
"""

from __future__ import annotations

import argparse
import collections
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services" / "memory"), str(ROOT / "services" / "common")]

from bionic_common.memory_types import Role, Scope  # noqa: E402
from bionic_memory.config import MemorySettings  # noqa: E402
from bionic_memory.service import MemoryService  # noqa: E402
from bionic_memory.store.qdrant import QdrantStore  # noqa: E402

DIMENSION = 384
# The QdrantClient methods that send a chat turn's requests, and the one-at-a-time ones
# the batches replaced (so that falling back to them shows).
COUNTED = (
    "query_points",
    "query_batch_points",
    "set_payload",
    "batch_update_points",
    "upsert",
    "scroll",
    "retrieve",
)


def counting(client: QdrantClient) -> collections.Counter[str]:
    """Count every call of the `COUNTED` methods of `client` from now on."""
    calls: collections.Counter[str] = collections.Counter()
    for name in COUNTED:
        method = getattr(client, name)

        def counted(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _method(*args, **kwargs)

        setattr(client, name, counted)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20, help="turns counted")
    parser.add_argument("--history", type=int, default=60, help="turns before the counted")
    args = parser.parse_args()
    with warnings.catch_warnings():  # local mode ignores payload indexes, and says so
        warnings.simplefilter("ignore", UserWarning)
        client = QdrantClient(location=":memory:")
        store = QdrantStore(client, "memories", DIMENSION)
    service = MemoryService(store, MemorySettings(dimension=DIMENSION))
    scope = Scope("tenant", "user")
    rng = np.random.default_rng(0)

    def vector() -> list[float]:
        v = rng.standard_normal(DIMENSION)
        return (v / np.linalg.norm(v)).tolist()  # type: ignore[no-any-return]

    def recall(n: int) -> None:
        text = f"Note {n}: I had tea at {n % 24}h."
        service.recall(scope, text, vector(), idempotency_key=f"u{n}")

    def remember(n: int) -> None:
        service.remember(
            scope,
            Role.ASSISTANT,
            f"Noted: tea at {n % 24}h (note {n}).",
            vector(),
            idempotency_key=f"a{n}",
            reinforce_related=True,
        )

    for n in range(args.history):
        recall(n)
        remember(n)
    calls = counting(client)
    steps: dict[str, Callable[[int], None]] = {
        "Recall (the user's message)": recall,
        "Remember (the reply, reinforcing)": remember,
    }
    rows = ["| call | requests per call | by client method |", "|---|---:|---|"]
    for label, step in steps.items():
        calls.clear()
        for n in range(args.history, args.history + args.turns):
            step(n)
        per = {name: count / args.turns for name, count in sorted(calls.items())}
        detail = ", ".join(f"{name} {count:g}" for name, count in per.items())
        rows.append(f"| {label} | {sum(per.values()):.1f} | {detail} |")
    sys.stdout.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
