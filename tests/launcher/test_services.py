"""What the launcher plans to run: the worker yields the CPU to interactive work, and the
embedder's OpenMP threads sleep instead of spinning between passes."""

from __future__ import annotations

from typing import Any

import pytest

from bionic_launcher.config import LauncherSettings
from bionic_launcher.services import plan


def settings(**overrides: Any) -> LauncherSettings:
    return LauncherSettings(upstream_base_url="http://upstream/v1", **overrides)


def test_the_worker_and_beat_run_nicer_than_the_interactive_services() -> None:
    nice = {spec.name: spec.nice for spec in plan(settings())}
    assert nice == {"embedder": 0, "memory": 0, "worker": 10, "beat": 10, "gateway": 0}
    assert {s.name: s.nice for s in plan(settings(background_nice=0))}["worker"] == 0


def test_the_embedder_waits_passively_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    (embedder,) = [s for s in plan(settings(embedder_replicas=1)) if s.name == "embedder"]
    assert embedder.env["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    replicas = [s for s in plan(settings(embedder_replicas=2)) if s.name.startswith("embedder")]
    assert [s.env["OMP_WAIT_POLICY"] for s in replicas] == ["ACTIVE", "ACTIVE"]
