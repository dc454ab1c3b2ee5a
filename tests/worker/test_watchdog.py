"""The worker's hard time limit: one watchdog thread, and a stuck task ends the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from bionic_worker.watchdog import Watchdog

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0  # seconds an expected expiry may take on a busy machine


class Expiries:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self.fired = threading.Event()

    def __call__(self, name: str, limit: float) -> None:
        self.seen.append((name, limit))
        self.fired.set()


def test_a_task_past_its_limit_is_reported_once_and_a_disarmed_one_never() -> None:
    expiries = Expiries()
    watchdog = Watchdog(expiries)
    done = watchdog.arm("quick", 0.05)
    watchdog.disarm(done)
    watchdog.arm("stuck", 0.1)
    assert expiries.fired.wait(WAIT)
    time.sleep(0.3)  # past the disarmed one's deadline too
    assert expiries.seen == [("stuck", 0.1)]


def test_an_earlier_deadline_armed_later_wakes_the_watchdog() -> None:
    expiries = Expiries()
    watchdog = Watchdog(expiries)
    watchdog.arm("long", 3600.0)  # the watchdog now sleeps for an hour
    watchdog.arm("short", 0.05)
    assert expiries.fired.wait(WAIT)
    assert expiries.seen == [("short", 0.05)]


def test_many_tasks_share_one_thread() -> None:
    watchdog = Watchdog(Expiries())
    before = set(threading.enumerate())
    tokens = [watchdog.arm(f"task {i}", 60.0) for i in range(50)]
    started = set(threading.enumerate()) - before  # threads that ended meanwhile do not count
    assert [thread.name for thread in started] == ["watchdog"]
    for token in tokens:
        watchdog.disarm(token)


def test_a_task_stuck_outside_its_event_loop_ends_the_worker_process() -> None:
    """Its soft limit cannot cancel a thread blocked outside the loop: at the hard limit
    the process exits (70) for its supervisor to start a fresh one."""
    script = textwrap.dedent(
        """
        import time
        from bionic_worker.app import Runner, _hard_limit_exceeded
        from bionic_worker.config import WorkerSettings
        from bionic_worker.watchdog import Watchdog

        async def blocked(services):
            time.sleep(60)  # blocks the loop's thread: nothing can cancel it

        runner = Runner(WorkerSettings(), [], Watchdog(_hard_limit_exceeded))
        runner.run("memory.stuck", blocked, soft_limit=0.2, hard_limit=0.5)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 70, done.stderr
    assert "memory.stuck is stuck past its hard time limit of 0.5s" in done.stderr
