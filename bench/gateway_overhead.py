"""What the gateway adds to a chat turn: gateway vs straight to the upstream.

The upstream is the recording upstream in its own process (it answers at once: a
zero-latency model), the gateway runs in the launcher-started embedded system (real
embedder, memory and worker). Every turn is a new user message, so each one is embedded,
stored and recalled. For each mode (non-stream, stream) and concurrency it reports
client-side latency and turns/s, and from the gateway's `Server-Timing` header the
stages: embed, recall, upstream (first byte) and the server-side total.

The gateway's own added time per turn is total − embed − recall − upstream, where total is
what the client measured (to the last byte), all of the same turn; its p50 at concurrency
1 is the number the target (≤ 3 ms) is about. Beside it, "besides memory" is total −
embed − recall alone: it keeps the upstream call, which holds the gateway's own HTTP client
work as well as the model's time (≈ the direct row). Two more targets use the same gateway
with per-request memory controls: `gateway-read-only` recalls but stores nothing (so no
reply is queued and the worker stays idle), `gateway-off` is the proxy alone. The gateway
logs at the launcher's level (INFO, its access line per request), as deployed.

The turn's time is the client's, so it holds the client's own work on the request and the
answer too. The bench's client is aiohttp's: straight to the recording upstream it spends
0.3-0.4 ms of CPU per turn where httpx's (the openai SDK's client) spends 1.2-1.7 ms, and
with httpx own added read 0.9-2.2 ms more (docs/benchmarks.md, session 11). `--variant 'as
launched' 'client http=httpx'` measures both in one run.

Turns are sent back to back (the next as soon as the last byte of one came), and at
concurrency 1 also paced (`--think`: a pause after each turn, as a person reading the answer
makes), where the worker's follow-up of a turn (the reply's embedding and store) has ended
before the next turn starts. Each run also reports the CPU time every process spent per
measured turn (from /proc: user + system, all threads), which depends far less than
latency on what else the machine is doing. `--variant` runs the gateway targets once per
change of the stack (a service's niceness or environment, the services restarted with it),
`--rounds` alternates the variants that many times (compared under the same drift of a
shared machine's load), `--profile FILE` runs the gateway under cProfile.

    .venv/bin/python bench/gateway_overhead.py [--turns 300] [--concurrency 1 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bionic_launcher.services import ServiceSpec  # noqa: E402
from bionic_launcher.stack import Stack  # noqa: E402
from tests.support.ports import free_ports  # noqa: E402
from tests.support.stack import stack_settings, wait_for  # noqa: E402

log = logging.getLogger("bench.gateway_overhead")
STAGES = ("embed", "recall", "upstream", "total")
MODES = {"gateway-read-only": "read-only", "gateway-off": "off"}
TARGETS = ("direct", "gateway", "gateway-read-only", "gateway-off")
PROCESSES = ("gateway", "embedder", "memory", "worker", "upstream", "client")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RESTART_SETTLE_SECONDS = 8.0
CLIENT = "aiohttp"  # the bench's HTTP client library; a variant 'client http=httpx' changes it


@dataclass
class Run:
    target: str
    stream: bool
    concurrency: int
    think: float = 0.0  # seconds between one turn's last byte and the next turn
    variant: str = ""  # how the run changed the stack, if it did (see `variants`)
    client: str = CLIENT  # the bench's HTTP client library
    seconds: float = 0.0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # client side, to the last byte
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    own: list[float] = field(default_factory=list)  # total − embed − recall − upstream
    besides: list[float] = field(default_factory=list)  # total − embed − recall
    server_own: list[float] = field(default_factory=list)  # the same inside the handler
    degraded: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # ms of CPU per measured turn

    def merge(self, other: Run) -> None:
        """Add another round of the same row (its CPU per turn averaged by turns)."""
        turns, more = len(self.latencies), len(other.latencies)
        self.cpu = {
            name: (self.cpu[name] * turns + other.cpu[name] * more) / max(turns + more, 1)
            for name in self.cpu
        }
        self.seconds += other.seconds
        self.errors += other.errors
        self.degraded += other.degraded
        self.latencies += other.latencies
        self.own += other.own
        self.besides += other.besides
        self.server_own += other.server_own
        for stage in STAGES:
            self.stages[stage] += other.stages[stage]

    @property
    def label(self) -> str:
        paced = f", paced {self.think * 1000:.0f} ms" if self.think else ""
        variant = f", {self.variant}" if self.variant else ""
        return f"{'stream' if self.stream else 'non-stream'}{paced}{variant}"


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads); the bench's own without pid."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def timing(header: str) -> dict[str, float]:
    """`embed;dur=1.20, recall;dur=3.40` → {"embed": 1.2, "recall": 3.4} (ms)."""
    found = {}
    for item in header.split(","):
        name, _, rest = item.strip().partition(";dur=")
        if rest:
            found[name] = float(rest)
    return found


Reply = tuple[int, Mapping[str, str]]  # status, headers; the body was read to its end
Post = Callable[[dict[str, Any]], Awaitable[Reply]]


@asynccontextmanager
async def http_client(
    library: str, base_url: str, headers: dict[str, str], concurrency: int
) -> AsyncIterator[Post]:
    """POST a chat body to `base_url`/chat/completions and read the whole answer, with
    `library`'s async client: aiohttp, the cheaper of the two, or httpx (the openai SDK's),
    whose own work per request the turn's time then holds too (see the module's doc)."""
    url = f"{base_url}/chat/completions"
    if library == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:

            async def post_httpx(body: dict[str, Any]) -> Reply:
                async with client.stream("POST", url, json=body) as reply:
                    async for _ in reply.aiter_raw():
                        pass
                return reply.status_code, reply.headers

            yield post_httpx
        return
    async with aiohttp.ClientSession(
        headers=headers,
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:

        async def post_aiohttp(body: dict[str, Any]) -> Reply:
            async with session.post(url, json=body) as reply:
                async for _ in reply.content.iter_any():
                    pass
            return reply.status, reply.headers

        yield post_aiohttp


async def turn(post: Post, run: Run, user: str, n: int) -> None:
    body = {
        "model": "recorder",
        "user": user,
        "stream": run.stream,
        "messages": [{"role": "user", "content": f"Note {n} from {user}: I had tea at {n % 24}h."}],
    }
    started = time.perf_counter()
    status, headers = await post(body)
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        run.errors += 1
        return
    run.latencies.append(elapsed)
    if not run.target.startswith("gateway"):
        return
    stages = timing(headers.get("server-timing", ""))
    if "total" in stages:  # non-stream: the handler's own time, without HTTP in and out
        run.server_own.append(
            stages["total"] - stages["embed"] - stages["recall"] - stages["upstream"]
        )
    stages["total"] = stages.get("total", elapsed)
    for name in STAGES:
        run.stages[name].append(stages.get(name, 0.0))
    run.besides.append(elapsed - stages["embed"] - stages["recall"])
    run.own.append(run.besides[-1] - stages["upstream"])
    run.degraded += headers.get("x-bionic-memory") == "degraded"


async def measure(
    base_url: str,
    run: Run,
    turns: int,
    warmup: int,
    pids: dict[str, int | None],
) -> Run:
    headers = {"authorization": "Bearer sk-bench"}
    if run.target in MODES:
        headers["x-bionic-memory-mode"] = MODES[run.target]
    async with http_client(run.client, base_url, headers, run.concurrency) as post:
        scratch = Run(run.target, run.stream, run.concurrency)
        await asyncio.gather(*(turn(post, scratch, "warmup", i) for i in range(warmup)))
        counter = iter(range(turns))

        async def worker(w: int) -> None:
            for n in counter:
                await turn(post, run, f"bench-{w}", n)
                if run.think:
                    await asyncio.sleep(run.think)

        if run.think:  # the warm-up's follow-ups end before the first measured turn
            await asyncio.sleep(1.0)
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(run.concurrency)))
        run.seconds = time.perf_counter() - started
        if run.think:  # the last turn's follow-up belongs to this run
            await asyncio.sleep(1.0)
        run.cpu = {
            name: (cpu_seconds(pid) - cpu[name]) * 1000 / max(len(run.latencies), 1)
            for name, pid in pids.items()
        }
    return run


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(runs: list[Run]) -> str:
    rows = [
        "Rows are back to back (each turn sent as soon as the last byte of the one before "
        "came, so the worker's follow-up of a memory-on turn runs during the next one) "
        "unless their mode says paced N ms (a pause of N ms after each turn, as a person "
        "reading the answer makes: the follow-up is over when the next turn starts).",
        "",
        "| target | mode | c | turns/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        rows.append(
            f"| {r.target} | {r.label} | {r.concurrency} | "
            f"{len(r.latencies) / r.seconds:.0f} | {pct(r.latencies, 0.5):.2f} | "
            f"{pct(r.latencies, 0.9):.2f} | {pct(r.latencies, 0.99):.2f} | {r.errors} |"
        )
    rows += [
        "",
        "Gateway per-stage p50 / p90 (ms; upstream = to the upstream's first byte; "
        "own added = client total − embed − recall − upstream, what the target is about; "
        "besides memory = client total − embed − recall, the same with the upstream call in "
        "it (the model's own time, ≈ the direct row, and the gateway's HTTP client work); "
        "handler own = own added with the handler's total, non-stream only):",
        "",
        "| target | mode | c | embed | recall | upstream | server total | own added "
        "| besides memory | handler own | degraded |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if not r.target.startswith("gateway"):
            continue
        cells = [
            f"{pct(r.stages[s], 0.5):.2f} / {pct(r.stages[s], 0.9):.2f}"
            for s in ("embed", "recall", "upstream", "total")
        ]
        rows.append(
            f"| {r.target} | {r.label} | {r.concurrency} | "
            + " | ".join(cells)
            + f" | {pct(r.own, 0.5):.2f} / {pct(r.own, 0.9):.2f}"
            + f" | {pct(r.besides, 0.5):.2f} / {pct(r.besides, 0.9):.2f}"
            + f" | {pct(r.server_own, 0.5):.2f} / {pct(r.server_own, 0.9):.2f} | {r.degraded} |"
        )
    rows += [
        "",
        "CPU per measured turn (ms, user + system of each process, all threads; worker = the "
        "decay worker, client = this bench's HTTP client; a turn's follow-up by the worker "
        "and the services it calls is counted in the run it belongs to only approximately "
        "for back-to-back runs):",
        "",
        "| target | mode | c | " + " | ".join(PROCESSES) + " |",
        "|---|---|---:|" + "---:|" * len(PROCESSES),
    ]
    for r in runs:
        rows.append(
            f"| {r.target} | {r.label} | {r.concurrency} | "
            + " | ".join(f"{r.cpu.get(p, float('nan')):.2f}" for p in PROCESSES)
            + " |"
        )
    direct = {(r.stream, r.concurrency, r.think, r.client): r for r in runs if r.target == "direct"}
    rows += ["", "Client-side p50 difference gateway − direct, and what memory explains:", ""]
    for r in runs:
        if r.target.startswith("gateway") and (
            d := direct.get((r.stream, r.concurrency, r.think, r.client))
        ):
            added = pct(r.latencies, 0.5) - pct(d.latencies, 0.5)
            memory = statistics.median(
                e + c for e, c in zip(r.stages["embed"], r.stages["recall"], strict=True)
            )
            rows.append(
                f"- {r.target}, {r.label}, c={r.concurrency}: "
                f"+{added:.2f} ms "
                f"(embed + recall p50 {memory:.2f} ms, the rest {added - memory:.2f} ms)"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300, help="measured turns per run")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--think",
        type=float,
        nargs="*",
        default=[100.0],
        help="also run c=1 paced: ms of pause after each turn (none: back to back only)",
    )
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument(
        "--modes", nargs="+", choices=("non-stream", "stream"), default=["non-stream", "stream"]
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        default=[],
        metavar="'SERVICES SETTING=VALUE'",
        help="run the gateway targets once per variant of the stack, each a change of the "
        "launcher's: 'worker,beat nice=0' (niceness), 'embedder OMP_WAIT_POLICY=unset' "
        "(an environment variable; unset removes it), 'gateway,client cpus=0' (the CPUs "
        "its threads run on; also for upstream and client), 'client http=httpx' (this "
        "bench's HTTP client; the direct target is then measured again with it), several "
        "joined by '; ', or 'as launched'; default: the stack as launched, once",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the variants this many times in turn, each row the union of its "
        "rounds: variants compared under the same drift of the machine's load",
    )
    parser.add_argument("--broker", default=None, help="broker URL; default SQLite in the data dir")
    parser.add_argument(
        "--memory-deadline", default="5", help="gateway memory deadline (s) for the run"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the gateway under cProfile (CPU time of its event loop's thread), stats here",
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
    # The gateway logs at the launcher's level (INFO: its one access line per request), as
    # deployed, into its log file.
    stack.specs["gateway"].env["BIONIC_GATEWAY_MEMORY_DEADLINE"] = args.memory_deadline
    if args.profile:  # uvicorn re-raises SIGTERM after its shutdown: to a no-op here
        stack.specs["gateway"] = replace(
            stack.specs["gateway"],
            argv=[
                sys.executable,
                "-c",
                "import cProfile, signal, sys, time; from bionic_gateway.__main__ import main; "
                "signal.signal(signal.SIGTERM, lambda *_: None); "
                "profile = cProfile.Profile(time.thread_time); profile.runcall(main); "
                "profile.dump_stats(sys.argv[1])",
                str(args.profile.resolve()),
            ],
        )
    runs: list[Run] = []
    try:
        wait_for(lambda: _up(upstream_url), timeout=20)
        stack.start()
        gateway_url = f"http://{settings.host}:{settings.gateway_port}/v1"
        urls = dict.fromkeys(TARGETS, gateway_url) | {"direct": upstream_url}
        original = dict(stack.specs)
        changes = {v: variant_change(v) for v in args.variant} or {"": {}}
        # The direct target is measured once per client: the stack's changes do not touch it.
        clients = [change.get("client", {}).get("http", CLIENT) for change in changes.values()]
        changed: set[str] = set()
        found: dict[tuple[str, bool, int, float, str], Run] = {}
        for concurrency in args.concurrency:
            paces = [0.0] + ([t / 1000 for t in args.think] if concurrency == 1 else [])
            for think, stream in itertools.product(paces, (m == "stream" for m in args.modes)):
                for _, (n, (variant, change)) in itertools.product(
                    range(args.rounds), enumerate(changes.items())
                ):
                    if variant:
                        _restart(stack, original, change, changed)
                        changed = {n for n, fields in change.items() if set(fields) - {"cpus"}}
                        _pin(_pids(stack, upstream.pid), change)
                    for target in args.targets:
                        if target == "direct" and clients[n] in clients[:n]:
                            continue
                        run = Run(target, stream, concurrency, think, variant, clients[n])
                        log.info("%s %s c=%d", target, run.label, concurrency)
                        pids = {name: stack.pid(name) for name in PROCESSES[:4]}
                        pids |= {"upstream": upstream.pid, "client": None}
                        asyncio.run(measure(urls[target], run, args.turns, args.warmup, pids))
                        key = (target, stream, concurrency, think, variant)
                        if key in found:
                            found[key].merge(run)
                        else:
                            found[key] = run
        runs = list(found.values())
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
    if args.profile:
        stats = pstats.Stats(str(args.profile), stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(40)
    if args.out:
        args.out.write_text(
            json.dumps(
                [
                    {
                        "target": r.target,
                        "stream": r.stream,
                        "concurrency": r.concurrency,
                        "think_s": r.think,
                        "variant": r.variant,
                        "seconds": r.seconds,
                        "errors": r.errors,
                        "latencies_ms": r.latencies,
                        "stages_ms": r.stages,
                        "own_ms": r.own,
                        "besides_memory_ms": r.besides,
                        "server_own_ms": r.server_own,
                        "cpu_ms_per_turn": r.cpu,
                    }
                    for r in runs
                ]
            )
        )


Change = dict[str, dict[str, Any]]  # service → ServiceSpec fields to replace


def variant_change(variant: str) -> Change:
    """'worker,beat nice=0' → {"worker": {"nice": 0}, "beat": {"nice": 0}};
    'embedder OMP_WAIT_POLICY=PASSIVE' → {"embedder": {"env": {"OMP_WAIT_POLICY": ...}}};
    'gateway,client cpus=0' → {"gateway": {"cpus": {0}}, "client": {"cpus": {0}}} (the
    CPUs its threads may run on; 'client' is this bench, 'upstream' the recording upstream);
    'client http=httpx' → {"client": {"http": "httpx"}} (this bench's HTTP client library);
    several such changes joined by '; ' make one variant; 'as launched' changes nothing."""
    change: Change = {}
    if variant == "as launched":
        return change
    for part in variant.split(";"):
        services, _, setting = part.strip().partition(" ")
        key, _, value = setting.partition("=")
        if not services or not key or not value:
            raise SystemExit(f"--variant {variant!r}: expected 'SERVICES SETTING=VALUE[; …]'")
        for name in services.split(","):
            fields = change.setdefault(name, {})
            if key == "nice":
                fields["nice"] = int(value)
            elif key == "cpus":
                fields["cpus"] = {int(cpu) for cpu in value.split(",")}
            elif key == "http":
                if name != "client" or value not in ("aiohttp", "httpx"):
                    raise SystemExit(f"--variant {variant!r}: expected 'client http=httpx'")
                fields["http"] = value
            else:
                fields.setdefault("env", {})[key] = value
    return change


def _restart(
    stack: Stack, original: dict[str, ServiceSpec], change: Change, changed: set[str]
) -> None:
    """Give the stack the launcher's specs with `change` (undoing the previous variant's
    change of the services in `changed`), restarting what differs."""
    for name in changed | set(change):
        fields = {k: v for k, v in change.get(name, {}).items() if k != "cpus"}
        if name not in original or not fields and name not in changed:
            continue  # not a service, or only its CPUs change
        stack.stop_service(name)
        spec = original[name]
        if "env" in fields:  # "unset" removes the variable
            env = {**os.environ, **spec.env, **fields["env"]}
            fields = {**fields, "env": {k: v for k, v in env.items() if v != "unset"}}
        stack.specs[name] = replace(spec, **fields)
        stack.start_service(name)
    time.sleep(RESTART_SETTLE_SECONDS)  # the start-up's own CPU is not measured


def _pids(stack: Stack, upstream: int) -> dict[str, int]:
    """The pid of every process of the run: the stack's services, upstream and client."""
    running = {name: stack.pid(name) for name in stack.specs}
    found = {name: pid for name, pid in running.items() if pid is not None}
    return found | {"upstream": upstream, "client": os.getpid()}


def _pin(pids: dict[str, int], change: Change) -> None:
    """Each process's threads on the CPUs its variant names, the others on all CPUs."""
    everywhere = set(range(os.cpu_count() or 1))
    for name, pid in pids.items():
        cpus = change.get(name, {}).get("cpus", everywhere)
        for thread in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(thread), cpus)
            except ProcessLookupError:
                pass  # the thread ended meanwhile


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/models", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
