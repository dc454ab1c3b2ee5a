"""Embedder throughput and latency, as ratios to the raw forward pass in the same run.

What runs, all on this machine at once (interleaved rounds, medians reported):
* raw      — the model called in this process, no server: tokenize, forward, pool, at the
             best batch size and thread count found by a sweep (the practical ceiling).
* service  — `python -m bionic_embedder` per precision (fp32, bf16, int8 forced past its
             gate), driven over gRPC by 64 concurrent single-text clients, and by one.
* infinity — optional (`--infinity path/to/infinity_emb`): the same model folder served by
             Infinity, driven over HTTP by the same clients.

Texts are real chat turns from LoCoMo: short (8-40 words) and long (turns joined to about
250 words). Usage: .venv/bin/python bench/embedder.py [--rounds 3] [--infinity …]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
from report import Table, replace_section

from bionic.embedder.v1 import embedder_pb2 as pb
from bionic.embedder.v1 import embedder_pb2_grpc as pb_grpc
from bionic_embedder.config import BUNDLED_MODEL, EmbedderSettings
from bionic_embedder.model import EmbeddingModel, resolve_model_path
from bionic_launcher.services import openmp_env

log = logging.getLogger("bench.embedder")
ROOT = Path(__file__).resolve().parents[1]
LOCOMO = ROOT.parent / "shared" / "data" / "locomo" / "locomo10.json"
CONCURRENCY = 64
PRECISIONS = ("fp32", "bf16", "int8")
SWEEP_BATCHES = (8, 16, 32, 64, 128)
SECTION_HEAD = """## Embedder

Written by `bench/embedder.py --write-docs`. Infinity runs from its own virtualenv (it pins
transformers 4.x and numpy 1.x, which the project's pins exclude), on the same torch:

    python3 -m venv /tmp/infinity-venv
    /tmp/infinity-venv/bin/pip install torch==2.13.0 'infinity-emb[torch,server]==0.0.78'
    .venv/bin/python bench/embedder.py --rounds 3 --short 384 --long 48 \\
        --infinity /tmp/infinity-venv/bin/infinity_emb --write-docs

"""


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    texts: list[str]
    latency_texts: list[str]  # for the one-client latency runs


def load_workloads(short_n: int, long_n: int) -> list[Workload]:
    conversations = json.loads(LOCOMO.read_text())
    turns = [
        turn["text"]
        for c in conversations
        for key, session in sorted(c["conversation"].items())
        if key.startswith("session_") and isinstance(session, list)
        for turn in session
        if turn.get("text")
    ]
    rng = random.Random(7)
    short = [t for t in turns if 8 <= len(t.split()) <= 40]
    rng.shuffle(short)
    long: list[str] = []
    current: list[str] = []
    for turn in turns:
        current.append(turn)
        if sum(len(t.split()) for t in current) >= 250:
            long.append(" ".join(current))
            current = []
    rng.shuffle(long)
    return [
        Workload("short", short[:short_n], short[short_n : short_n + 100]),
        Workload("long", long[:long_n], long[long_n : long_n + 40]),
    ]


# --- the raw forward: the ceiling ------------------------------------------------------------


class Raw:
    """The model in this process, called directly with sorted, fixed-size batches."""

    def __init__(self, precision: str) -> None:
        self.model = EmbeddingModel(
            EmbedderSettings(
                precision=precision, force_precision=True, torch_threads=0, parallel_min_tokens=0
            )
        )

    def throughput(self, texts: list[str], batch: int, threads: int) -> float:
        self.model.threads = threads
        ordered = sorted(texts, key=len)  # the least padding any batching could reach
        started = time.perf_counter()
        for i in range(0, len(ordered), batch):
            self.model.encode(ordered[i : i + batch])
        return len(texts) / (time.perf_counter() - started)

    def single_latencies(self, texts: list[str], threads: int) -> list[float]:
        self.model.threads = threads
        out = []
        for text in texts:
            started = time.perf_counter()
            self.model.encode([text])
            out.append(time.perf_counter() - started)
        return out


def sweep(raw: Raw, workload: Workload) -> tuple[int, int]:
    """The batch size and thread count where the raw forward is fastest."""
    sample = workload.texts[:256] if workload.name == "short" else workload.texts[:64]
    raw.throughput(sample[:16], 16, 2)  # warm the kernels
    results = {
        (batch, threads): raw.throughput(sample, batch, threads)
        for threads in (1, 2)
        for batch in SWEEP_BATCHES
        if batch <= len(sample)
    }
    for (batch, threads), rate in sorted(results.items()):
        log.info(
            "sweep %s: batch %d, %d threads: %.1f texts/s", workload.name, batch, threads, rate
        )
    return max(results, key=lambda k: results[k])


# --- servers and their clients ---------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    kind: str  # "grpc" or "http"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    _client: Callable[[list[str]], Awaitable[np.ndarray]] | None = None

    def start(self, logs: Path) -> None:
        self.log_path = logs / f"{self.name}.log"
        out = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                await self.client()(["ready?"])
                return
            except (grpc.aio.AioRpcError, httpx.HTTPError):
                await asyncio.sleep(1)
        raise RuntimeError(f"{self.name} not ready in {timeout}s; see {self.log_path}")

    def client(self) -> Callable[[list[str]], Awaitable[np.ndarray]]:
        """This server's client (one channel, or one pool of 64 connections)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Callable[[list[str]], Awaitable[np.ndarray]]:
        if self.kind == "grpc":
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
            stub = pb_grpc.EmbedderServiceStub(channel)

            async def grpc_embed(texts: list[str]) -> np.ndarray:
                request = pb.EmbedRequest(texts=texts, encoding=pb.VECTOR_ENCODING_PACKED_F32)
                reply = await stub.Embed(request, timeout=300)
                return np.frombuffer(reply.packed, "<f4").reshape(len(texts), reply.dimension)

            return grpc_embed
        http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}",
            limits=httpx.Limits(max_connections=CONCURRENCY),
            timeout=300,
        )
        model = self.env["MODEL_PATH"]

        async def http_embed(texts: list[str]) -> np.ndarray:
            reply = await http.post("/embeddings", json={"model": model, "input": texts})
            reply.raise_for_status()
            return np.array([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)

        return http_embed


async def drive(server: Server, texts: list[str], concurrency: int) -> tuple[float, list[float]]:
    """`concurrency` clients each sending one text at a time until `texts` are done."""
    embed = server.client()
    await embed(texts[:1])  # connect before the clock starts
    pending = iter(texts)
    latencies: list[float] = []

    async def client() -> None:
        for text in pending:
            started = time.perf_counter()
            await embed([text])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(texts) / (time.perf_counter() - started), latencies


def embedder_server(precision: str, port: int, threads: int) -> Server:
    env = {
        "BIONIC_EMBEDDER_TORCH_THREADS": str(threads),
        "BIONIC_EMBEDDER_PORT": str(port),
        "BIONIC_EMBEDDER_METRICS_PORT": "0",
        "BIONIC_EMBEDDER_PRECISION": precision,
        "BIONIC_EMBEDDER_FORCE_PRECISION": "true",  # int8 fails the gate; measured anyway
        "BIONIC_EMBEDDER_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        **openmp_env(),  # as the launcher starts it (compose and k8s set the same)
    }
    return Server(
        f"service-{precision}", [sys.executable, "-m", "bionic_embedder"], env, port, "grpc"
    )


def infinity_server(binary: str, dtype: str, port: int, model_path: str) -> Server:
    argv = [binary, "v2", "--model-id", model_path, "--port", str(port), "--device", "cpu"]
    argv += ["--engine", "torch", "--batch-size", str(CONCURRENCY), "--dtype", dtype]
    argv += ["--no-bettertransformer"]
    env = {"HF_HUB_OFFLINE": "1", "MODEL_PATH": model_path}
    return Server(f"infinity-{dtype}", argv, env, port, "http")


# --- the run ---------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.array(latencies) * 1000, q))


async def run(args: argparse.Namespace) -> str:
    workloads = load_workloads(args.short, args.long)
    model_path = resolve_model_path(BUNDLED_MODEL)
    ports = iter(range(args.base_port, args.base_port + 20))
    servers = [embedder_server(p, next(ports), args.service_threads) for p in args.precisions]
    if args.infinity:
        servers += [
            infinity_server(args.infinity, d, next(ports), model_path)
            for d in ("float32", "bfloat16")
        ]
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    for server in servers:
        server.start(logs)
    try:
        for server in servers:
            await server.wait_ready(600)
        raws = {p: Raw(p) for p in ("fp32", "bf16")}
        best = {w.name: sweep(raws["fp32"], w) for w in workloads}
        reference = {w.name: raws["fp32"].model.encode(w.texts[:64]).vectors for w in workloads}
        cosine: dict[str, float] = {}
        for server in servers:
            embed = server.client()
            lowest = []
            for w in workloads:
                vectors = await embed(w.texts[:64])
                vectors = vectors / np.linalg.norm(
                    vectors, axis=1, keepdims=True
                )  # not all normalise
                lowest.append(float(np.min(np.sum(vectors * reference[w.name], axis=1))))
            cosine[server.name] = min(lowest)
        rates: dict[tuple[str, str], list[float]] = {}
        lat64: dict[tuple[str, str], list[float]] = {}
        lat1: dict[str, list[float]] = {}
        for r in range(args.rounds):
            log.info("round %d of %d (load %.2f)", r + 1, args.rounds, os.getloadavg()[0])
            for w in workloads:
                batch, threads = best[w.name]
                for p, raw in raws.items():
                    rates.setdefault((f"raw-{p}", w.name), []).append(
                        raw.throughput(w.texts, batch, threads)
                    )
                for server in servers:
                    rate, latencies = await drive(server, w.texts, CONCURRENCY)
                    rates.setdefault((server.name, w.name), []).append(rate)
                    lat64.setdefault((server.name, w.name), []).extend(latencies)
            short = workloads[0].latency_texts
            for p, raw in raws.items():
                for threads in (1, 2):
                    lat1.setdefault(f"raw-{p}@{threads}", []).extend(
                        raw.single_latencies(short, threads)
                    )
            for server in servers:
                lat1.setdefault(server.name, []).extend((await drive(server, short, 1))[1])
        load_after = os.getloadavg()[0]
    finally:
        for server in servers:
            server.stop()
    return report(
        args, workloads, best, rates, lat64, lat1, cosine, servers, (load_before, load_after)
    )


def report(
    args: argparse.Namespace,
    workloads: list[Workload],
    best: dict[str, tuple[int, int]],
    rates: dict[tuple[str, str], list[float]],
    lat64: dict[tuple[str, str], list[float]],
    lat1: dict[str, list[float]],
    cosine: dict[str, float],
    servers: list[Server],
    load: tuple[float, float],
) -> str:
    names = [s.name for s in servers]
    ceiling = {w.name: median(rates[("raw-fp32", w.name)]) for w in workloads}
    for p in ("fp32", "bf16"):  # the raw single-text forward at its better thread count
        lat1[f"raw-{p}"] = min(lat1[f"raw-{p}@1"], lat1[f"raw-{p}@2"], key=lambda x: pct(x, 50))
    (short_batch, short_threads), (long_batch, long_threads) = best["short"], best["long"]
    intro = (
        f"{args.rounds} interleaved rounds, medians; per run {len(workloads[0].texts)} short "
        f"and {len(workloads[1].texts)} long texts. Raw ceiling (fp32, length-sorted batches): "
        f"short at batch {short_batch} x {short_threads} threads, long at batch {long_batch} "
        f"x {long_threads} threads. Load average (1 min, {os.cpu_count()} cores): "
        f"{load[0]:.1f} at start, {load[1]:.1f} at end."
    )
    throughput = Table(
        [
            "what",
            "precision",
            "short texts/s",
            "x raw fp32",
            "long texts/s",
            "x raw fp32",
            "p50 / p99 ms (short)",
            "min cosine to fp32",
        ]
    )
    for name in ["raw-fp32", "raw-bf16", *names]:
        what, precision = name.split("-", 1)
        short_rate = median(rates[(name, "short")])
        long_rate = median(rates[(name, "long")])
        lat = lat64.get((name, "short"))
        throughput.add(
            [
                what,
                precision,
                f"{short_rate:.1f}",
                f"{short_rate / ceiling['short']:.2f}",
                f"{long_rate:.1f}",
                f"{long_rate / ceiling['long']:.2f}",
                f"{pct(lat, 50):.0f} / {pct(lat, 99):.0f}" if lat else "-",
                f"{cosine[name]:.5f}" if name in cosine else "-",
            ]
        )
    latency = Table(["what", "precision", "p50 ms", "p99 ms", "p50 - raw p50 of its precision"])
    for name in ["raw-fp32", "raw-bf16", *names]:
        what, precision = name.split("-", 1)
        raw_key = "raw-bf16" if precision in ("bf16", "bfloat16") else "raw-fp32"
        delta = pct(lat1[name], 50) - pct(lat1[raw_key], 50)
        latency.add(
            [
                what,
                precision,
                f"{pct(lat1[name], 50):.2f}",
                f"{pct(lat1[name], 99):.2f}",
                "-" if what == "raw" or precision == "int8" else f"{delta:+.2f} ms",
            ]
        )
    parts = [
        intro,
        f"Throughput with {CONCURRENCY} concurrent single-text clients (raw: no server, "
        "batched in-process):",
        throughput.render(),
        "Latency with one client, short texts (raw: the single-text forward):",
        latency.render(),
    ]
    pairs = [("service-fp32", "infinity-float32"), ("service-bf16", "infinity-bfloat16")]
    ratios = [
        f"* {ours} / {theirs}, {w.name}: "
        f"{median(rates[(ours, w.name)]) / median(rates[(theirs, w.name)]):.2f}x"
        for ours, theirs in pairs
        if ours in names and theirs in names
        for w in workloads
    ]
    if ratios:
        parts += [f"Ratio to Infinity at {CONCURRENCY} clients, same precision:", "\n".join(ratios)]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short", type=int, default=512, help="short texts per run")
    parser.add_argument("--long", type=int, default=64, help="long texts per run")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS))
    parser.add_argument(
        "--service-threads", type=int, default=0, help="the service's torch threads (0: all)"
    )
    parser.add_argument("--infinity", help="an infinity_emb executable (its own venv)")
    parser.add_argument("--base-port", type=int, default=51300)
    parser.add_argument("--logs", default="/tmp/bench-embedder-logs")
    parser.add_argument("--write-docs", action="store_true", help="into docs/benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    text = asyncio.run(run(args))
    sys.stdout.write(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", "embedder", SECTION_HEAD + text)


if __name__ == "__main__":
    main()
