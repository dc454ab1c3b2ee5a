"""The launcher's Stack with stand-in services (sleeping processes): a started service
lives as long as the stack, whichever thread started it, and dies with the launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bionic_launcher.config import LauncherSettings
from bionic_launcher.services import ServiceSpec
from bionic_launcher.stack import Stack
from tests.support.stack import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# A signal, when it comes, comes within milliseconds of the spawning thread's exit.
WATCH_SECONDS = 2.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(LauncherSettings(data_dir=str(tmp_path), upstream_base_url="http://x/v1"))
    running.specs = {"sleeper": ServiceSpec(name="sleeper", argv=SLEEPER)}
    try:
        yield running
    finally:
        running.stop()


def run_in_thread(target: Callable[[], object]) -> None:
    """Run `target` on a thread of its own and return once the OS thread is gone (the
    moment a death signal tied to it would be sent)."""
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    wait_for(lambda: not Path(f"/proc/self/task/{thread.native_id}").exists(), timeout=10)


def stays_alive(stack: Stack, name: str, pid: int) -> bool:
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        if stack.pid(name) != pid:
            return False
        time.sleep(0.05)
    return True


def test_a_service_started_from_a_short_lived_thread_outlives_the_thread(stack: Stack) -> None:
    run_in_thread(lambda: stack.start_service("sleeper"))
    pid = stack.pid("sleeper")
    assert pid is not None
    assert stays_alive(stack, "sleeper", pid)


def test_a_service_restarted_by_supervise_outlives_the_supervising_thread(stack: Stack) -> None:
    stack.start_service("sleeper")
    first = stack.pid("sleeper")
    assert first is not None
    os.kill(first, signal.SIGKILL)
    stop = threading.Event()

    def supervise_until_restarted() -> None:
        watcher = threading.Thread(target=stack.supervise, args=(stop,))
        watcher.start()
        wait_for(lambda: stack.pid("sleeper") not in (None, first), timeout=30)
        stop.set()
        watcher.join()

    run_in_thread(supervise_until_restarted)
    restarted = stack.pid("sleeper")
    assert restarted is not None and restarted != first
    assert stays_alive(stack, "sleeper", restarted)


LAUNCHER = """
import sys, time
from bionic_launcher.config import LauncherSettings
from bionic_launcher.services import ServiceSpec
from bionic_launcher.stack import Stack

stack = Stack(LauncherSettings(data_dir=sys.argv[1], upstream_base_url="http://x/v1"))
stack.specs = {"sleeper": ServiceSpec(name="sleeper", argv=sys.argv[2:])}
stack.start()
print(stack.pid("sleeper"), flush=True)
time.sleep(600)
"""


def test_services_die_with_a_launcher_killed_with_9(tmp_path: Path) -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path), *SLEEPER], stdout=subprocess.PIPE
    )
    try:
        assert launcher.stdout is not None
        child = int(launcher.stdout.readline())
        assert running(child)
    finally:
        launcher.kill()
        launcher.wait()
    wait_for(lambda: not running(child), timeout=30)


def running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_service_with_nice_runs_that_much_nicer_than_the_launcher(stack: Stack) -> None:
    stack.specs["background"] = ServiceSpec(name="background", argv=SLEEPER, nice=7)
    stack.start_service("sleeper")
    stack.start_service("background")
    plain, background = stack.pid("sleeper"), stack.pid("background")
    assert plain is not None and background is not None
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness(plain) == own
    assert niceness(background) == min(own + 7, 19)
