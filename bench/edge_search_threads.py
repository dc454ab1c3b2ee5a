"""Recall on the edge backend by the size of the engine's search pool (`search_threads`).

    .venv/bin/python bench/edge_search_threads.py --memories 200000 --users 2000
    .venv/bin/python bench/edge_search_threads.py --memories 1000000 --users 10000

One store is filled as `memory_scale.py` fills it (Import of each user's history, random
unit vectors), then reopened with each pool size in turn, `--rounds` times, and
`--recalls` Recalls of random users timed on each (in-process `MemoryService`, no gRPC,
no embedding; CPU of every thread of the process). Rounds alternate so that the sizes are
compared under the same drift of the machine's load. Each Recall stores its message and
promotes its hits, so the store grows by about 15 points per Recall as the sizes are
measured, in the order given: the default (1, last by default) meets the largest store.
The result goes to this bench's section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from memory_scale import ingest, latencies
from report import Table, replace_section

from bionic_common.memory_types import Tier
from bionic_memory.config import MemorySettings
from bionic_memory.forgetting import tier_laws
from bionic_memory.service import MemoryService
from bionic_memory.store.edge import SEARCH_THREADS, EdgeStore

log = logging.getLogger("edge_search_threads")
ROOT = Path(__file__).resolve().parents[1]
MEASURES = ("recall_p50_ms", "recall_p99_ms", "recall_cpu_ms", "search_p50_ms")


def measure(
    folder: str, settings: MemorySettings, args: argparse.Namespace
) -> dict[int, list[dict[str, float]]]:
    """Each pool size's latency results, one per round."""
    results: dict[int, list[dict[str, float]]] = {size: [] for size in args.sizes}
    for round_ in range(args.rounds):
        for size in args.sizes:
            store = EdgeStore(folder, args.dimension, search_threads=size)
            try:
                rng = np.random.default_rng(args.seed + round_)
                results[size].append(latencies(MemoryService(store, settings), rng, args))
            finally:
                store.close()
            log.info("size %d, round %d: %s", size, round_, results[size][-1])
    return results


def report(args: argparse.Namespace, results: dict[int, list[dict[str, float]]]) -> str:
    table = Table(
        [
            "search threads",
            "Recall p50 ms",
            "Recall p99 ms",
            "CPU per Recall ms",
            "plain Search p50 ms",
        ]
    )
    for size, rounds in results.items():
        name = f"{size}" if size else f"0 (one per CPU: {len(os.sched_getaffinity(0))})"
        if size == SEARCH_THREADS:
            name += ", the default"
        table.add([name, *(" / ".join(f"{r[m]:.2f}" for r in rounds) for m in MEASURES)])
    return "\n".join(
        [
            f"### Edge search pool, {args.memories:,} memories",
            "",
            f"`bench/edge_search_threads.py --memories {args.memories} --users {args.users} "
            f"--sizes {' '.join(map(str, args.sizes))} --rounds {args.rounds}` — one store of "
            f"{args.memories:,} memories over {args.users:,} users, reopened with each pool "
            f"size in turn; {args.recalls:,} Recalls of random users per size and round "
            "(in-process, no gRPC, no embedding; CPU of all threads). One value per round. "
            f"Load average at the end: {os.getloadavg()[0]:.1f} on "
            f"{len(os.sched_getaffinity(0))} cores.",
            "",
            table.render(),
            "",
            "Mean over rounds, Recall p50: "
            + ", ".join(
                f"{size} thread(s) {statistics.fmean(r['recall_p50_ms'] for r in rounds):.2f} ms"
                for size, rounds in results.items()
            )
            + ".",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--recalls", type=int, default=1_000)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[8, 2, 1], help="pool sizes; 0: one per CPU"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", default=None, help="store folder (default: a temp dir)")
    parser.add_argument("--no-docs", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    args.expired = 0  # what memory_scale.ingest reads: nothing is past its expiry here
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = MemorySettings(dimension=args.dimension)
    lifetime = tier_laws(settings)[Tier.LONG_TERM].expires_at(1.0, 0.0)
    with tempfile.TemporaryDirectory(dir=args.data_dir) as folder:
        store = EdgeStore(folder, args.dimension)
        try:
            log.info(
                "ingest: %s",
                ingest(
                    MemoryService(store, settings), np.random.default_rng(args.seed), args, lifetime
                ),
            )
        finally:
            store.close()
        results = measure(folder, settings, args)
    text = report(args, results)
    sys.stdout.write(text + "\n")
    if not args.no_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", f"edge-search-{args.memories}", text)


if __name__ == "__main__":
    main()
