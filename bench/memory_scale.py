"""Memory service at scale on the edge backend: ingest, Recall latency, Prune, memory.

    .venv/bin/python bench/memory_scale.py                       # 1,000,000 x 384 over 10,000 users
    .venv/bin/python bench/memory_scale.py --memories 200000 --users 2000

Everything runs in-process on `MemoryService` (no gRPC, no embedding): vectors are random
unit vectors, so the numbers are the memory service's own cost. Stages:

* ingest — memories of `--users` users arrive through Import's logic in batches; for
  reference, the same run times single Remember writes (dedupe lookup + upsert each);
* recall — `--recalls` Recall calls (store the message, search long-term memory, reinforce
  and promote 14 hits, search short-term memory, cluster suppression) for random users;
  plain filtered top-7 Search is the same-run baseline;
* prune — `--expired` of the memories were last reinforced 40 days before the clock, so
  one Prune forgets exactly them; the same-run baseline is counting them with the index.
  Meanwhile a thread issues a Recall for a random user every 50 ms: their latencies show
  whether Prune's chunked delete lets the chat path through;
* resident memory — the process RSS growth from the empty store to the full one.

The results go to the memory-scale section of docs/benchmarks.md (and --json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from report import Table, replace_section

from bionic_common.memory_types import Exported, Memory, Role, Scope, Tier
from bionic_memory.config import MemorySettings
from bionic_memory.forgetting import tier_laws
from bionic_memory.service import MemoryService
from bionic_memory.store.base import Where
from bionic_memory.store.edge import EdgeStore

log = logging.getLogger("memory_scale")
ROOT = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.0
RECALL_GAP = 0.05  # seconds between the Recalls issued during Prune


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def serving_rss(folder: str, dimension: int, users: int) -> int:
    """RSS of a fresh process that opened the store at `folder` and served 500 searches
    over random users: what a memory service holding it would keep resident."""
    code = (
        "import sys, numpy as np\n"
        "from bionic_common.memory_types import Scope\n"
        "from bionic_memory.config import MemorySettings\n"
        "from bionic_memory.service import MemoryService\n"
        "from bionic_memory.store.edge import EdgeStore\n"
        "sys.path.insert(0, sys.argv[4])\n"
        "from memory_scale import rss_bytes\n"
        "dim, users = int(sys.argv[2]), int(sys.argv[3])\n"
        "store = EdgeStore(sys.argv[1], dim)\n"
        "service = MemoryService(store, MemorySettings(dimension=dim))\n"
        "rng = np.random.default_rng(1)\n"
        "for n in range(500):\n"
        "    user = int(rng.integers(0, max(users, 1)))\n"
        "    service.search(Scope('bench', f'user-{user}'), rng.standard_normal(dim).tolist())\n"
        "sys.stdout.write(str(rss_bytes()))\n"
        "store.close()\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            folder,
            str(dimension),
            str(users),
            str(Path(__file__).parent),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout)


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def user_history(
    rng: np.random.Generator,
    user: int,
    per_user: int,
    dimension: int,
    expired_every: int,
    lifetime: float,
) -> tuple[Scope, list[Exported]]:
    """One user's memories as Import takes them: every `expired_every`-th memory of all
    users (none if 0) was last reinforced 1.5 lifetimes before NOW, so it is expired then;
    the others within the last half lifetime."""
    scope = Scope("bench", f"user-{user}")
    vectors = unit_vectors(rng, per_user, dimension).tolist()
    ages = rng.uniform(0, lifetime / 2, per_user)
    items = []
    for j in range(per_user):
        i = user * per_user + j
        old = bool(expired_every) and i % expired_every == 0
        t = NOW - (1.5 * lifetime if old else float(ages[j]))
        memory = Memory(
            id="",
            scope=scope,
            role=Role.USER if j % 2 else Role.ASSISTANT,
            tier=Tier.LONG_TERM,
            text=f"memory {j} of user {user}: something worth remembering",
            created_at=t,
            updated_at=t,
            strength=1.0,
            metadata={"i": i},
        )
        items.append(Exported(memory, vectors[j]))
    return scope, items


def ingest(
    service: MemoryService, rng: np.random.Generator, args: argparse.Namespace, lifetime: float
) -> dict[str, float]:
    """Each Import call carries one user's history (`--memories / --users` memories);
    every `memories / expired`-th memory was last reinforced 1.5 lifetimes ago (so it is
    expired now), the others within the last half lifetime."""
    per_user = args.memories // args.users
    expired_every = args.memories // args.expired if args.expired else 0
    seconds = cpu = 0.0  # inside import_batch only: generating the data is not ingest
    written = 0
    for user in range(args.users):
        scope, items = user_history(rng, user, per_user, args.dimension, expired_every, lifetime)
        started, cpu_started = time.perf_counter(), time.process_time()
        imported, _ = service.import_batch(scope, items)
        seconds += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        written += imported
        if user % 500 == 0:
            log.info("ingested %d / %d", written, args.memories)
    return {
        "memories": written,
        "seconds": seconds,
        "per_second": written / seconds,
        # Per second of the process's CPU (every thread): what contention does not change.
        "per_cpu_second": written / cpu,
        "per_user": per_user,
    }


def single_writes(
    service: MemoryService, rng: np.random.Generator, args: argparse.Namespace
) -> float:
    vectors = unit_vectors(rng, args.single_writes, args.dimension).tolist()
    started = time.perf_counter()
    for i, v in enumerate(vectors):
        scope = Scope("bench", f"user-{i % args.users}")
        service.remember(scope, Role.USER, f"single write {i}", v, now=NOW)
    return args.single_writes / (time.perf_counter() - started)


def latencies(
    service: MemoryService, rng: np.random.Generator, args: argparse.Namespace
) -> dict[str, Any]:
    queries = unit_vectors(rng, args.recalls, args.dimension).tolist()
    users = rng.integers(0, args.users, args.recalls)
    recall_ms, search_ms, recalled = [], [], []
    recall_cpu = 0.0
    for n, (user, query) in enumerate(zip(users.tolist(), queries, strict=True)):
        scope = Scope("bench", f"user-{user}")
        started = time.perf_counter()
        service.search(scope, query, limit=7, now=NOW + n)
        search_ms.append((time.perf_counter() - started) * 1e3)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = service.recall(scope, f"question {n}", query, now=NOW + n)
        recall_ms.append((time.perf_counter() - started) * 1e3)
        recall_cpu += time.process_time() - cpu_started
        recalled.append(len(result.memories))
    return {
        "recall_p50_ms": percentile(recall_ms, 50),
        "recall_p99_ms": percentile(recall_ms, 99),
        "recall_cpu_ms": recall_cpu / len(recall_ms) * 1e3,
        "search_p50_ms": percentile(search_ms, 50),
        "search_p99_ms": percentile(search_ms, 99),
        "mean_recalled": statistics.fmean(recalled),
    }


def recalls_until(
    done: threading.Event, service: MemoryService, args: argparse.Namespace, out: list[float]
) -> None:
    """Recall for random users every RECALL_GAP seconds until `done`; latencies to `out`."""
    rng = np.random.default_rng(args.seed + 1)
    n = 0
    while not done.wait(RECALL_GAP):
        scope = Scope("bench", f"user-{int(rng.integers(0, args.users))}")
        query = unit_vectors(rng, 1, args.dimension)[0].tolist()
        started = time.perf_counter()
        service.recall(scope, f"during prune {n}", query, now=NOW)
        out.append((time.perf_counter() - started) * 1e3)
        n += 1


def prune(service: MemoryService, store: EdgeStore, args: argparse.Namespace) -> dict[str, float]:
    """One Prune at NOW of long-term memory (forgotten or, with the archive, archived),
    with Recalls arriving meanwhile."""
    started = time.perf_counter()
    expired = store.count(Where(tier=Tier.LONG_TERM.value, expires_before=NOW))
    count_seconds = time.perf_counter() - started
    done, recall_ms = threading.Event(), []
    recaller = threading.Thread(target=recalls_until, args=(done, service, args, recall_ms))
    recaller.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        pruned = service.prune(now=NOW, tier=Tier.LONG_TERM)
    finally:
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        done.set()
        recaller.join()
    return {
        "recalls_during": len(recall_ms),
        "recall_max_ms": max(recall_ms, default=0.0),
        "recall_p50_ms": percentile(recall_ms, 50) if recall_ms else 0.0,
        "expired": expired,
        "forgotten": pruned.forgotten_long_term,
        "archived": pruned.archived,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "count_seconds": count_seconds,
    }


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    ingest_, lat, pruned = results["ingest"], results["latency"], results["prune"]
    per_million = results["rss_growth_bytes"] / results["ingest"]["memories"] * 1e6 / 2**30
    table = Table(["measure", "result", "target", "same-run reference"])
    table.add(
        [
            "Recall p99 (p50), excluding embedding",
            f"{lat['recall_p99_ms']:.1f} ms ({lat['recall_p50_ms']:.1f} ms)",
            "≤ 15 ms",
            f"plain filtered top-7 Search p99 {lat['search_p99_ms']:.2f} ms "
            f"(p50 {lat['search_p50_ms']:.2f}); Recall/Search p99 "
            f"{lat['recall_p99_ms'] / lat['search_p99_ms']:.1f}x; CPU per Recall "
            f"{lat['recall_cpu_ms']:.1f} ms (all threads)",
        ]
    )
    table.add(
        [
            f"ingest, Import batches of {ingest_['per_user']} (one user's history each)",
            f"{ingest_['per_second']:,.0f} memories/s ({ingest_['per_cpu_second']:,.0f} per "
            "second of CPU, all threads)",
            "≥ 3,000/s",
            f"single Remember writes (dedupe lookup + upsert each) "
            f"{results['single_per_second']:,.0f}/s; batches/single "
            f"{ingest_['per_second'] / results['single_per_second']:.2f}x"
            if results["single_per_second"]
            else "",
        ]
    )
    gap = f"one per {RECALL_GAP * 1e3:.0f} ms"
    during = (
        f"{pruned['recalls_during']} Recalls served meanwhile ({gap}): p50 "
        f"{pruned['recall_p50_ms']:.1f} ms, max {pruned['recall_max_ms']:.1f} ms"
        if pruned["recalls_during"]
        else f"over before a Recall came ({gap})"
    )
    table.add(
        [
            f"Prune of {pruned['expired']:,} expired ({pruned['forgotten']:,} deleted, "
            f"{pruned['archived']:,} archived)",
            f"{pruned['seconds']:.2f} s",
            "≤ 5 s",
            f"counting them on the expires_at index {pruned['count_seconds'] * 1e3:.0f} ms; "
            f"{pruned['cpu_seconds']:.2f} s of CPU (all threads); " + during,
        ]
    )
    table.add(
        [
            "resident memory",
            f"{per_million:.2f} GiB per million memories",
            "stated",
            f"a fresh process serving the store: {results['rss_full_bytes'] / 2**30:.2f} GiB "
            f"with {ingest_['memories']:,} memories, {results['rss_empty_bytes'] / 2**20:.0f} "
            "MiB empty",
        ]
    )
    return "\n".join(
        [
            "## Memory service at scale (edge backend)",
            "",
            f"`{results['command']}` — {ingest_['memories']:,} memories of "
            f"{args.dimension} dimensions over {args.users:,} users "
            f"(~{ingest_['per_user']} each), random unit vectors, in-process "
            f"`MemoryService` on `EdgeStore`, no gRPC and no embedding; {args.recalls:,} "
            f"recalls of random users; {results['machine']}.",
            "",
            table.render(),
            "",
            f"Recall returned {lat['mean_recalled']:.1f} memories on average (limit 7). "
            f"Ingest took {ingest_['seconds']:.0f} s inside Import. The machine's load average "
            f"(2 cores; about 1 is this bench itself) was "
            f"{results['load_after_ingest']:.1f} over the last 5 minutes of ingest and "
            f"{results['load_after_recall']:.1f} over the minute of recalls.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--expired", type=int, default=100_000)
    parser.add_argument("--recalls", type=int, default=2_000)
    parser.add_argument("--single-writes", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--preset", choices=["default", "original"], default="default")
    parser.add_argument("--data-dir", default=None, help="store folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-docs", action="store_true", help="do not update the docs")
    parser.add_argument("--section", default="memory-scale", help="docs/benchmarks.md section")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(dir=args.data_dir) as folder:
        store = EdgeStore(folder, args.dimension)
        store.close()
        rss_empty = serving_rss(folder, args.dimension, 0)
        store = EdgeStore(folder, args.dimension)
        settings = MemorySettings(dimension=args.dimension, preset=args.preset)
        lifetime = tier_laws(settings)[Tier.LONG_TERM].expires_at(1.0, 0.0)
        service = MemoryService(store, settings)
        try:
            results: dict[str, Any] = {"ingest": ingest(service, rng, args, lifetime)}
            results["load_after_ingest"] = os.getloadavg()[1]
            log.info("ingest: %s", results["ingest"])
            results["latency"] = latencies(service, rng, args)
            results["load_after_recall"] = os.getloadavg()[0]
            log.info("latency: %s", results["latency"])
            results["single_per_second"] = (
                single_writes(service, rng, args) if args.single_writes else 0.0
            )
        finally:
            store.close()
        rss_full = serving_rss(folder, args.dimension, args.users)
        results["rss_empty_bytes"], results["rss_full_bytes"] = rss_empty, rss_full
        results["rss_growth_bytes"] = rss_full - rss_empty
        log.info("resident: empty %d, full %d", rss_empty, rss_full)
        store = EdgeStore(folder, args.dimension)
        try:
            service = MemoryService(store, settings)
            results["prune"] = prune(service, store, args)
            log.info("prune: %s", results["prune"])
        finally:
            store.close()
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    results["command"] = (
        f"bench/memory_scale.py --memories {args.memories} --users {args.users} "
        f"--dimension {args.dimension} --expired {args.expired} --recalls {args.recalls} "
        f"--preset {args.preset}"
    )
    results["machine"] = f"{len(os.sched_getaffinity(0))} cores, shared with other work"
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.no_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", args.section, report(args, results))
    log.info("done: %s", json.dumps(results))


if __name__ == "__main__":
    main()
