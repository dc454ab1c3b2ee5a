"""One launcher-started stack (real embedder, memory, worker) in front of the recording
upstream for every stack test of tests/security: open mode, one admin key, every service
logging to a file so the key-leak check can read the logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.support.recording_upstream import RecordingUpstream
from tests.support.stack import gateway_url, logged_stack, stack_settings

ADMIN_KEY = "sk-security-admin-5d1e"


@dataclass
class SecureStack:
    settings: LauncherSettings
    stack: Stack
    upstream: RecordingUpstream
    data: Path
    keys: set[str] = field(default_factory=set)  # every key used, for the leak check
    pids: dict[str, int | None] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return gateway_url(self.settings)

    def http(self, key: str) -> httpx.Client:
        self.keys.add(key)
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=60
        )

    def alive(self) -> bool:
        """Every service still the process that started (none died) and the gateway
        answering."""
        same = {name: self.stack.pid(name) for name in self.stack.specs} == self.pids
        return same and httpx.get(self.url.removesuffix("/v1") + "/health").is_success


@pytest.fixture(scope="package")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    upstream = RecordingUpstream().start()
    data = tmp_path_factory.mktemp("security")
    settings = stack_settings(data, upstream.base_url)  # broker: SQLite in the data folder
    stack = logged_stack(
        settings,
        {
            "BIONIC_GATEWAY_MEMORY_DEADLINE": "5",
            "BIONIC_GATEWAY_ADMIN_KEYS": json.dumps([ADMIN_KEY]),
        },
    )
    try:
        stack.start()
        found = SecureStack(settings, stack, upstream, data, keys={ADMIN_KEY})
        found.pids = {name: stack.pid(name) for name in stack.specs}
        yield found
    finally:
        stack.stop()
        upstream.stop()
