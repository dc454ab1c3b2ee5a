"""What waking up costs on this machine: the floor under every cross-process step of a turn.

    .venv/bin/python bench/wakeups.py

An asyncio loop (uvloop, as the gateway runs) that sleeps and wakes, alone and with one
unary gRPC call (grpc.aio, the gateway's client, against a health server in another
process) or one hop to a worker thread and back (what the memory service does per call)
each time it wakes. CPU is read from the clock of the loop's thread and of the whole
process, per iteration; the call's own cost is its row minus the sleep-only row of the
same round. Rounds alternate the rows. On a virtual machine a wake can cost far more CPU
than the work it wakes for, and a chat turn crosses a dozen of them (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from report import Table, replace_section

ROOT = Path(__file__).resolve().parents[1]
# A health server on a free port, which prints the port once it serves.
SERVER = """
from concurrent.futures import ThreadPoolExecutor
import grpc
from grpc_health.v1 import health, health_pb2_grpc
server = grpc.server(ThreadPoolExecutor(max_workers=2))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"""
ROWS = ("sleep only", "gRPC unary call (grpc.aio)", "hop to a thread and back")


async def measure(port: int, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """Each row's (loop thread, process) CPU ms per iteration, one pair per round."""
    loop = asyncio.get_running_loop()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest()

    async def call() -> None:
        await health.Check(request, timeout=5, wait_for_ready=True)

    async def hop() -> None:
        await loop.run_in_executor(None, time.monotonic)

    async def nothing() -> None:
        return None

    work: dict[str, Callable[[], Awaitable[None]]] = dict(
        zip(ROWS, (nothing, call, hop), strict=True)
    )
    for step in work.values():  # warm: connection, executor thread
        for _ in range(20):
            await step()
    results: dict[str, list[tuple[float, float]]] = {row: [] for row in ROWS}
    for _ in range(args.rounds):
        for row, step in work.items():
            thread, process = time.thread_time(), time.process_time()
            for _ in range(args.iterations):
                await asyncio.sleep(args.gap / 1e3)
                await step()
            results[row].append(
                (
                    (time.thread_time() - thread) / args.iterations * 1e3,
                    (time.process_time() - process) / args.iterations * 1e3,
                )
            )
    await channel.close()
    return results


def report(args: argparse.Namespace, results: dict[str, list[tuple[float, float]]]) -> str:
    base = results[ROWS[0]]
    table = Table(["each wake", "loop thread CPU ms", "process CPU ms", "the step itself ms"])
    for row, rounds in results.items():
        extra = [process - b for (_, process), (_, b) in zip(rounds, base, strict=True)]
        table.add(
            [
                row,
                f"{statistics.median(t for t, _ in rounds):.3f}",
                f"{statistics.median(p for _, p in rounds):.3f}",
                "-" if row == ROWS[0] else f"{statistics.median(extra):.3f}",
            ]
        )
    return "\n".join(
        [
            "### What a wake costs here (`bench/wakeups.py`)",
            "",
            f"`bench/wakeups.py --iterations {args.iterations} --gap {args.gap:g} --rounds "
            f"{args.rounds}` — a uvloop loop sleeping {args.gap:g} ms between steps, "
            f"{args.iterations} steps per row and round, medians of {args.rounds} alternated "
            "rounds; the step itself = its row's process CPU minus the sleep-only row's.",
            "",
            table.render(),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--gap", type=float, default=5.0, help="ms slept before each step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        results = uvloop.run(measure(port, args))
    finally:
        server.terminate()
        server.wait()
    text = report(args, results)
    sys.stdout.write(text + "\n")
    if not args.no_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", "wakeups", text)


if __name__ == "__main__":
    main()
