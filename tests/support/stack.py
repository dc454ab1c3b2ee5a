"""The embedded system, started by the real launcher, for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import redis

from bionic_common.clients import MemoryClient
from bionic_common.memory_types import Memory, Scope
from bionic_gateway.auth import TenantResolver
from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.support.ports import free_port, free_ports


def stack_settings(
    data_dir: Path, upstream_base_url: str | None, broker_url: str | None = None
) -> LauncherSettings:
    gateway, memory, embedder, llm = free_ports(4)
    return LauncherSettings(
        data_dir=str(data_dir),
        gateway_port=gateway,
        memory_port=memory,
        embedder_port=embedder,
        llm_port=llm,
        metrics_port=0,
        upstream_base_url=upstream_base_url,
        broker_url=broker_url,
        startup_timeout=120,
    )


def logged_stack(settings: LauncherSettings, gateway_env: dict[str, str]) -> Stack:
    """A stack whose services each log to <data>/logs/<name>.log (the gateway at DEBUG, with
    `gateway_env` added), so that a test can read the logs."""
    stack = Stack(settings)
    logs = Path(settings.data_dir, "logs")
    stack.specs = {
        name: replace(spec, log_file=str(logs / f"{name}.log"))
        for name, spec in stack.specs.items()
    }
    stack.specs["gateway"].env.update({"BIONIC_GATEWAY_LOG_LEVEL": "DEBUG", **gateway_env})
    return stack


@contextmanager
def running_stack(settings: LauncherSettings) -> Iterator[Stack]:
    stack = Stack(settings)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def gateway_url(settings: LauncherSettings) -> str:
    return f"http://{settings.host}:{settings.gateway_port}/v1"


def tenant_of(settings: LauncherSettings, api_key: str) -> str:
    """The tenant the gateway derives for `api_key` (open mode, the stack's own salt)."""
    salt = Path(settings.data_dir, "tenant_salt").read_text().strip()
    return TenantResolver({}, salt).tenant(f"Bearer {api_key}")


def list_memories(settings: LauncherSettings, api_key: str, user: str) -> list[Memory]:
    """Every memory of a user, read straight from the memory service."""

    async def read() -> list[Memory]:
        client = MemoryClient(f"{settings.host}:{settings.memory_port}")
        scope = Scope(tenant=tenant_of(settings, api_key), user=user)
        found: list[Memory] = []
        token = ""
        try:
            while True:
                page, token = await client.list_page(
                    scope, page_size=100, page_token=token, timeout=5
                )
                found.extend(page)
                if not token:
                    return found
        finally:
            await client.close()

    return asyncio.run(read())


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.25):  # type: ignore[no-untyped-def]
    """Poll until `predicate()` is truthy; return its value or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL: the machine's own server when it answers, else one started here."""
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1).ping()
    except redis.RedisError:
        pass
    else:
        yield "redis://127.0.0.1:6379/15"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no Redis at 127.0.0.1:6379 and no redis-server binary to start")
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        env=os.environ,
    )
    try:
        wait_for(lambda: _pings(port), timeout=10)
        yield f"redis://127.0.0.1:{port}/15"
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


class AofRedis:
    """A redis-server of the test's own that writes every change to an append-only file in
    `folder`, so that it can be killed and started again on the same data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no redis-server binary to start")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: _pings(self.port), timeout=30)

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)
