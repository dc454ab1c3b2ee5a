"""Where the edge backend's delete time goes: one Prune's delete per store layout and call.

    .venv/bin/python bench/edge_delete.py                          # 200,000 memories, 10% expired
    .venv/bin/python bench/edge_delete.py --memories 50000 --layouts store,cold-payload

Each layout is a shard of `--memories` memories (384 dimensions, 100 per user, the service's
own payloads via Import's logic) of which every tenth expired; it is built once, then
copied for each delete so every delete starts from the same files. Before a delete the
copy's pages are dropped from the page cache (fsync + POSIX_FADV_DONTNEED on its own
files), as after the memory service reopens a store: the engine's cold payload storage
is then read from disk as it is touched. Layouts:

* store — what EdgeStore builds: BM25 vector, tenant index, keyword and instant indexes,
  payload in RAM;
* cold-payload — the same with the engine's default (cold, on-disk) payload storage;
* no-lexical, no-tenant-index, no-keyword-indexes, no-instant-indexes, bare — the store
  layout without the BM25 vector / that index / every index and the BM25 vector.

Calls: `store` — EdgeStore.delete_where (chunks re-checked by the filter), `filter` — one
delete_points_by_filter of everything, `ids` — delete_points by id, 1,000 per call. Without
the indexes a filter is a scan, so layouts without them run `ids` only. The results are
written to stdout (and --json); the section is docs/benchmarks.md `edge-delete` if asked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from memory_scale import NOW, user_history
from report import Table, replace_section

from bionic_common.memory_types import Exported, Scope, Tier
from bionic_memory.config import MemorySettings
from bionic_memory.forgetting import tier_laws
from bionic_memory.service import MemoryService
from bionic_memory.store.base import (
    INSTANT_FIELDS,
    KEYWORD_FIELDS,
    TENANT_FIELD,
    Point,
    Where,
)
from bionic_memory.store.edge import VECTOR, EdgeStore

log = logging.getLogger("edge_delete")
ROOT = Path(__file__).resolve().parents[1]
PER_USER = 100
IDS_PER_CALL = 1000
EXPIRED = Where(tier=Tier.LONG_TERM.value, expires_before=NOW)

# layout: (payload in RAM, BM25 vector, payload indexes dropped)
LAYOUTS: dict[str, tuple[bool, bool, tuple[str, ...]]] = {
    "store": (True, True, ()),
    "cold-payload": (False, True, ()),
    "no-lexical": (True, False, ()),
    "no-tenant-index": (True, True, (TENANT_FIELD,)),
    "no-keyword-indexes": (True, True, KEYWORD_FIELDS),
    "no-instant-indexes": (True, True, INSTANT_FIELDS),
    "bare": (True, False, (TENANT_FIELD, *KEYWORD_FIELDS, *INSTANT_FIELDS)),
}


def history(args: argparse.Namespace) -> tuple[list[tuple[Scope, list[Exported]]], int]:
    """Every user's memories (as bench/memory_scale.py makes them), every tenth expired."""
    settings = MemorySettings(dimension=args.dimension, preset="original")
    lifetime = tier_laws(settings)[Tier.LONG_TERM].expires_at(1.0, 0.0)
    rng = np.random.default_rng(args.seed)
    users = [
        user_history(rng, user, PER_USER, args.dimension, 10, lifetime)
        for user in range(args.memories // PER_USER)
    ]
    expired = sum(e.memory.updated_at < NOW - lifetime for _, items in users for e in items)
    return users, expired


class _WithoutLexical(EdgeStore):
    def upsert(self, points: Sequence[Point]) -> None:
        super().upsert([replace(p, lexical=False) for p in points])


def build(folder: str, layout: str, users: list[tuple[Scope, list[Exported]]], dim: int) -> None:
    """The layout's shard, and next to it the ids of its expired memories."""
    in_ram, lexical, dropped = LAYOUTS[layout]
    if not in_ram:  # the shard's first segment is made with the engine's default payload
        shard = qe.EdgeShard.create(
            os.path.join(folder, "shard"),
            qe.EdgeConfig(vectors={VECTOR: qe.EdgeVectorParams(dim, qe.Distance.Cosine)}),
        )
        shard.close()
    store = (EdgeStore if lexical else _WithoutLexical)(folder, dim)
    for name in dropped:
        store._shard.update(qe.UpdateOperation.delete_field_index(name))
    service = MemoryService(store, MemorySettings(dimension=dim, preset="original"))
    for scope, items in users:
        service.import_batch(scope, items)
    expired: list[str] = []
    offset = None
    while True:
        page, offset = store.scroll(EXPIRED, 10_000, offset)
        expired += [p.id for p in page]
        if offset is None:
            break
    store.close()
    Path(folder, "expired.json").write_text(json.dumps(expired))


def drop_page_cache(folder: str) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def delete(folder: str, call: str, dim: int) -> dict[str, float]:
    """One delete of the expired memories by `call`, on a shard whose pages are not cached."""
    expired = json.loads(Path(folder, "expired.json").read_text())
    drop_page_cache(folder)
    # EdgeStore would create the indexes a layout lacks, so only `store` opens one.
    store = EdgeStore(folder, dim) if call == "store" else None
    shard = store._shard if store else qe.EdgeShard.load(os.path.join(folder, "shard"))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    started, cpu = time.perf_counter(), time.process_time()
    if store:
        store.delete_where(EXPIRED)
    elif call == "filter":
        shard.update(
            qe.UpdateOperation.delete_points_by_filter(
                qe.Filter(
                    must=[
                        qe.FieldCondition("tier", match=qe.MatchValue(Tier.LONG_TERM.value)),
                        qe.FieldCondition("expires_at", range=qe.RangeFloat(lt=NOW)),
                    ]
                )
            )
        )
    else:
        for k in range(0, len(expired), IDS_PER_CALL):
            shard.update(qe.UpdateOperation.delete_points(expired[k : k + IDS_PER_CALL]))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults
    left = len(shard.retrieve(expired, with_payload=False, with_vector=False))
    if store:
        store.close()
    else:
        shard.close()
    return {
        "deleted": len(expired) - left,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "major_faults": faults,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=200_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", default=None, help="where the shards go (default: temp)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--section", default=None, help="write docs/benchmarks.md section")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    users, expired = history(args)
    rows: list[dict[str, Any]] = []
    for layout in args.layouts.split(","):
        indexed = not LAYOUTS[layout][2]
        with tempfile.TemporaryDirectory(dir=args.data_dir) as base:
            built = os.path.join(base, "built")
            started = time.perf_counter()
            build(built, layout, users, args.dimension)
            log.info("%s: built in %.0f s", layout, time.perf_counter() - started)
            for _ in range(args.repeat):
                for call in ("store", "filter", "ids") if indexed else ("ids",):
                    copy = os.path.join(base, "copy")
                    shutil.copytree(built, copy)
                    result = {"layout": layout, "call": call, **delete(copy, call, args.dimension)}
                    shutil.rmtree(copy)
                    log.info("%s", result)
                    rows.append(result)
    text = report(args, expired, rows)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.section:
        replace_section(ROOT / "docs" / "benchmarks.md", args.section, text)


def report(args: argparse.Namespace, expired: int, rows: list[dict[str, Any]]) -> str:
    """Per (layout, call): the fastest repeat, in µs of CPU per deleted point, and its
    ratio to the store layout's `ids` call."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["layout"], row["call"])
        if key not in best or row["cpu_seconds"] < best[key]["cpu_seconds"]:
            best[key] = row
    base = best.get(("store", "ids"))
    table = Table(["layout", "call", "wall", "CPU", "µs CPU / point", "vs store ids", "faults"])
    for (layout, call), row in best.items():
        per_point = row["cpu_seconds"] / max(row["deleted"], 1) * 1e6
        ratio = row["cpu_seconds"] / base["cpu_seconds"] if base else float("nan")
        table.add(
            [
                layout,
                call,
                f"{row['seconds']:.2f} s",
                f"{row['cpu_seconds']:.2f} s",
                f"{per_point:.1f}",
                f"{ratio:.2f}x",
                f"{row['major_faults']:,}",
            ]
        )
    return "\n".join(
        [
            "## Edge delete: where Prune's time goes",
            "",
            f"`bench/edge_delete.py --memories {args.memories}` — delete the {expired:,} "
            f"expired of {args.memories:,} memories ({args.dimension} dimensions), page "
            f"cache dropped first; fastest of {args.repeat}; "
            f"{len(os.sched_getaffinity(0))} cores, shared with other work.",
            "",
            table.render(),
        ]
    )


if __name__ == "__main__":
    main()
