"""What the gateway adds to a chat turn: gateway vs straight to the upstream.

The upstream is the recording upstream in its own process (it answers at once: a
zero-latency model), the gateway runs in the launcher-started embedded system (real
embedder, memory and worker). Every turn is a new user message, so each one is embedded,
stored and recalled. For each mode (non-stream, stream) and concurrency it reports
client-side latency and turns/s, and from the gateway's `Server-Timing` header the
stages: embed, recall, upstream (first byte) and the server-side total.

The gateway's own added time per turn is total − embed − recall − upstream, where total is
what the client measured (to the last byte), all of the same turn; its p50 at concurrency
1 is the number the target (≤ 3 ms) is about. Two more targets use the same gateway with
per-request memory controls: `gateway-read-only` recalls but stores nothing (so no reply is
queued and the worker stays idle), `gateway-off` is the proxy alone.

    .venv/bin/python bench/gateway_overhead.py [--turns 300] [--concurrency 1 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bionic_launcher.stack import Stack  # noqa: E402
from tests.support.ports import free_ports  # noqa: E402
from tests.support.stack import stack_settings, wait_for  # noqa: E402

log = logging.getLogger("bench.gateway_overhead")
STAGES = ("embed", "recall", "upstream", "total")
MODES = {"gateway-read-only": "read-only", "gateway-off": "off"}


@dataclass
class Run:
    target: str
    stream: bool
    concurrency: int
    seconds: float = 0.0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # client side, to the last byte
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    own: list[float] = field(default_factory=list)  # total − embed − recall − upstream
    server_own: list[float] = field(default_factory=list)  # the same inside the handler
    degraded: int = 0


def timing(header: str) -> dict[str, float]:
    """`embed;dur=1.20, recall;dur=3.40` → {"embed": 1.2, "recall": 3.4} (ms)."""
    found = {}
    for item in header.split(","):
        name, _, rest = item.strip().partition(";dur=")
        if rest:
            found[name] = float(rest)
    return found


async def turn(client: httpx.AsyncClient, run: Run, user: str, n: int) -> None:
    body = {
        "model": "recorder",
        "user": user,
        "stream": run.stream,
        "messages": [{"role": "user", "content": f"Note {n} from {user}: I had tea at {n % 24}h."}],
    }
    started = time.perf_counter()
    async with client.stream("POST", "/chat/completions", json=body) as reply:
        async for _ in reply.aiter_raw():
            pass
    elapsed = (time.perf_counter() - started) * 1000
    if reply.status_code != 200:
        run.errors += 1
        return
    run.latencies.append(elapsed)
    if not run.target.startswith("gateway"):
        return
    stages = timing(reply.headers.get("server-timing", ""))
    if "total" in stages:  # non-stream: the handler's own time, without HTTP in and out
        run.server_own.append(
            stages["total"] - stages["embed"] - stages["recall"] - stages["upstream"]
        )
    stages["total"] = stages.get("total", elapsed)
    for name in STAGES:
        run.stages[name].append(stages.get(name, 0.0))
    run.own.append(elapsed - stages["embed"] - stages["recall"] - stages["upstream"])
    run.degraded += reply.headers.get("x-bionic-memory") == "degraded"


async def measure(base_url: str, run: Run, turns: int, warmup: int) -> Run:
    limits = httpx.Limits(
        max_connections=run.concurrency, max_keepalive_connections=run.concurrency
    )
    headers = {"authorization": "Bearer sk-bench"}
    if run.target in MODES:
        headers["x-bionic-memory-mode"] = MODES[run.target]
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60
    ) as client:
        scratch = Run(run.target, run.stream, run.concurrency)
        await asyncio.gather(*(turn(client, scratch, "warmup", i) for i in range(warmup)))
        counter = iter(range(turns))

        async def worker(w: int) -> None:
            for n in counter:
                await turn(client, run, f"bench-{w}", n)

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(run.concurrency)))
        run.seconds = time.perf_counter() - started
    return run


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(runs: list[Run]) -> str:
    rows = [
        "| target | mode | c | turns/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        rows.append(
            f"| {r.target} | {'stream' if r.stream else 'non-stream'} | {r.concurrency} | "
            f"{len(r.latencies) / r.seconds:.0f} | {pct(r.latencies, 0.5):.2f} | "
            f"{pct(r.latencies, 0.9):.2f} | {pct(r.latencies, 0.99):.2f} | {r.errors} |"
        )
    rows += [
        "",
        "Gateway per-stage p50 / p90 (ms; upstream = to the upstream's first byte; "
        "own added = client total − embed − recall − upstream; handler own = the same "
        "with the handler's total, non-stream only):",
        "",
        "| target | mode | c | embed | recall | upstream | server total | own added "
        "| handler own | degraded |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if not r.target.startswith("gateway"):
            continue
        cells = [
            f"{pct(r.stages[s], 0.5):.2f} / {pct(r.stages[s], 0.9):.2f}"
            for s in ("embed", "recall", "upstream", "total")
        ]
        rows.append(
            f"| {r.target} | {'stream' if r.stream else 'non-stream'} | {r.concurrency} | "
            + " | ".join(cells)
            + f" | {pct(r.own, 0.5):.2f} / {pct(r.own, 0.9):.2f}"
            + f" | {pct(r.server_own, 0.5):.2f} / {pct(r.server_own, 0.9):.2f} | {r.degraded} |"
        )
    direct = {(r.stream, r.concurrency): r for r in runs if r.target == "direct"}
    rows += ["", "Client-side p50 difference gateway − direct, and what memory explains:", ""]
    for r in runs:
        if r.target.startswith("gateway") and (r.stream, r.concurrency) in direct:
            d = direct[(r.stream, r.concurrency)]
            added = pct(r.latencies, 0.5) - pct(d.latencies, 0.5)
            memory = statistics.median(
                e + c for e, c in zip(r.stages["embed"], r.stages["recall"], strict=True)
            )
            rows.append(
                f"- {r.target}, {'stream' if r.stream else 'non-stream'}, c={r.concurrency}: "
                f"+{added:.2f} ms "
                f"(embed + recall p50 {memory:.2f} ms, the rest {added - memory:.2f} ms)"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300, help="measured turns per run")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--broker", default=None, help="broker URL; default SQLite in the data dir")
    parser.add_argument(
        "--memory-deadline", default="5", help="gateway memory deadline (s) for the run"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    data = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    (upstream_port,) = free_ports(1)
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.support.recording_upstream", "--port", str(upstream_port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    settings = stack_settings(data, upstream_url, broker_url=args.broker)
    stack = Stack(settings)
    stack.specs = {  # service logs to files: stdout is the report's
        name: replace(spec, log_file=str(data / "logs" / f"{name}.log"))
        for name, spec in stack.specs.items()
    }
    stack.specs["gateway"].env.update(
        {
            "BIONIC_GATEWAY_MEMORY_DEADLINE": args.memory_deadline,
            "BIONIC_GATEWAY_LOG_LEVEL": "WARNING",
        }
    )
    runs: list[Run] = []
    try:
        wait_for(lambda: _up(upstream_url), timeout=20)
        stack.start()
        gateway_url = f"http://{settings.host}:{settings.gateway_port}/v1"
        for concurrency in args.concurrency:
            for stream in (False, True):
                targets = (
                    ("direct", upstream_url),
                    ("gateway", gateway_url),
                    ("gateway-read-only", gateway_url),
                    ("gateway-off", gateway_url),
                )
                for target, url in targets:
                    run = Run(target, stream, concurrency)
                    log.info("%s stream=%s c=%d", target, stream, concurrency)
                    runs.append(asyncio.run(measure(url, run, args.turns, args.warmup)))
    finally:
        stack.stop()
        upstream.terminate()
        upstream.wait(10)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    text = (
        report(runs)
        + f"\n\nLoad average (1/5/15 min) at the end: {load} on {os.cpu_count()} cores."
    )
    sys.stdout.write(text + "\n")
    if args.out:
        args.out.write_text(
            json.dumps(
                [
                    {
                        "target": r.target,
                        "stream": r.stream,
                        "concurrency": r.concurrency,
                        "seconds": r.seconds,
                        "errors": r.errors,
                        "latencies_ms": r.latencies,
                        "stages_ms": r.stages,
                        "own_ms": r.own,
                        "server_own_ms": r.server_own,
                    }
                    for r in runs
                ]
            )
        )


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/models", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
