"""Start, watch and stop the services of the embedded system as local processes."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bionic_launcher.config import LauncherSettings
from bionic_launcher.services import ServiceSpec, plan

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
RESTARTS_ALLOWED = 5  # unexpected exits per service within RESTART_WINDOW before giving up
RESTART_WINDOW = 60.0


class StackError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """Runs in the child before exec: a launcher killed with -9 takes its children along.

    The kernel sends the signal when the *thread* that forked the child exits, not the
    process: every child is therefore forked by the stack's one spawner thread."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_setup(nice: int) -> Callable[[], None]:
    """What runs in a child before exec: `_die_with_parent`, and `nice` added to its
    niceness (inherited by every thread it starts)."""

    def setup() -> None:
        _die_with_parent()
        if nice:
            os.nice(nice)

    return setup


class Stack:
    def __init__(self, settings: LauncherSettings) -> None:
        self.settings = settings
        self.specs = {spec.name: spec for spec in plan(settings)}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._wanted: set[str] = set()
        self._restarts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        # One thread forks every child and lives until stop(): a child started from a
        # short-lived thread (a test's helper, asyncio.to_thread) would otherwise get the
        # death signal as soon as that thread ended. An executor's thread never idles out.
        self._spawner: ThreadPoolExecutor | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        os.makedirs(os.path.join(self.settings.data_dir, "logs"), exist_ok=True)
        for name in self.specs:
            self.start_service(name, wait=False)
        deadline = time.monotonic() + self.settings.startup_timeout
        for name in self.specs:
            self.wait_healthy(name, deadline - time.monotonic())

    def stop(self) -> None:
        """Stop every service, each SIGTERM then SIGKILL after a bound: the gateway (the
        front door) first, then all the others at once, so their waits overlap."""
        names = list(reversed(self.specs))
        front, rest = names[:1], names[1:]
        for name in front:
            self.stop_service(name)
        with ThreadPoolExecutor(max_workers=max(len(rest), 1)) as pool:
            list(pool.map(self.stop_service, rest))
        with self._lock:
            spawner, self._spawner = self._spawner, None
        if spawner is not None:
            spawner.shutdown()

    def start_service(self, name: str, wait: bool = True) -> None:
        spec = self.specs[name]
        with self._lock:
            self._wanted.add(name)
            self._spawn(spec)
        if wait:
            self.wait_healthy(name, self.settings.startup_timeout)

    def stop_service(self, name: str, kill: bool = False) -> None:
        with self._lock:
            self._wanted.discard(name)
            proc = self._procs.pop(name, None)
            log_file = self._logs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(self.settings.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s did not stop in %.0fs; killing it", name, self.settings.stop_timeout
                )
                proc.kill()
                proc.wait()
            log.info("%s stopped (exit %s)", name, proc.returncode)
        if log_file is not None:
            log_file.close()

    def pid(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def _spawn(self, spec: ServiceSpec) -> None:
        """Start a service's process on the spawner thread (under the lock)."""
        if self._spawner is None:
            self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")
        self._spawner.submit(self._fork, spec).result()

    def _fork(self, spec: ServiceSpec) -> None:
        out: IO[bytes] | None = None
        if spec.log_file:
            os.makedirs(os.path.dirname(spec.log_file), exist_ok=True)
            out = open(spec.log_file, "ab")  # noqa: SIM115 - closed in stop_service
            self._logs[spec.name] = out
        proc = subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # the terminal's Ctrl-C reaches the launcher only
            preexec_fn=_child_setup(spec.nice),
        )
        self._procs[spec.name] = proc
        log.info("started %s (pid %d, nice +%d)", spec.name, proc.pid, spec.nice)

    # --- health --------------------------------------------------------------------------

    def wait_healthy(self, name: str, timeout: float) -> None:
        spec = self.specs[name]
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            proc = self._procs.get(name)
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise StackError(f"{name} exited during start-up (exit {code})")
            if self._healthy(spec):
                log.info("%s is healthy", name)
                return
            if time.monotonic() > deadline:
                raise StackError(f"{name} was not healthy within the start-up timeout")
            time.sleep(0.2)

    def _healthy(self, spec: ServiceSpec) -> bool:
        if spec.health == "grpc":
            with grpc.insecure_channel(spec.health_target) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1.0
                    )
                except grpc.RpcError:
                    return False
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        if spec.health == "http":
            try:
                return httpx.get(spec.health_target, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False
        return True  # a process without a health endpoint is healthy while it runs

    # --- supervision ---------------------------------------------------------------------

    def supervise(self, stop: threading.Event) -> None:
        """Restart services that exit unexpectedly, until `stop` is set or one keeps dying."""
        while not stop.wait(0.5):
            for name in list(self._wanted):
                with self._lock:
                    proc = self._procs.get(name)
                    if name not in self._wanted or proc is None or proc.poll() is None:
                        continue
                    log.error("%s exited unexpectedly (exit %s)", name, proc.returncode)
                    recent = self._restarts.setdefault(name, deque())
                    now = time.monotonic()
                    while recent and now - recent[0] > RESTART_WINDOW:
                        recent.popleft()
                    if len(recent) >= RESTARTS_ALLOWED:
                        raise StackError(f"{name} keeps exiting; giving up")
                    recent.append(now)
                    self._spawn(self.specs[name])
