"""Prometheus and Grafana: valid to promtool, scraping every service, charting only metrics
that our running services really export (one launcher stack, scraped live)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bionic_launcher.config import LauncherSettings
from bionic_launcher.services import plan
from tests.deploy.contract import ROOT, load_compose
from tests.support.ports import free_ports
from tests.support.recording_upstream import RecordingUpstream
from tests.support.stack import gateway_url, running_stack, stack_settings

PROMETHEUS = ROOT / "deploy/prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARD = ROOT / "deploy/grafana/dashboards/bionicmemory.json"
HEALTHCHECK = ROOT / "deploy/docker/healthcheck.py"
# Series names of ours: raw metrics (bionic_…) and recording rules (bionic:…).
OUR_SERIES = re.compile(r"\bbionic[a-z0-9_:]*")
# The sample names each metric type exposes, from its family name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
METRICS_OFFSETS = range(0, 20)  # the launcher puts /metrics ports at base + a small offset


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is missing: `make test` installs Debian's prometheus as root")
    return found


def run_promtool(*args: str) -> None:
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def recording_rules() -> dict[str, str]:
    rules: dict[str, str] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    rules[rule["record"]] = rule["expr"]
    return rules


def alert_exprs() -> list[str]:
    return [
        rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def free_metrics_base() -> int:
    """A base port whose launcher offsets are all free."""
    for candidate in range(23000, 60000, 97):
        try:
            for offset in METRICS_OFFSETS:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate + offset))
        except OSError:
            continue
        return candidate
    raise RuntimeError("no free range of ports for /metrics")


def metrics_urls(settings: LauncherSettings) -> dict[str, str]:
    """Every /metrics endpoint of the stack, from the launcher's own plan."""
    urls: dict[str, str] = {}
    for spec in plan(settings):
        ports = [v for k, v in spec.env.items() if k.endswith("_METRICS_PORT") and v != "0"]
        if ports:
            urls[spec.name] = f"http://{settings.host}:{ports[0]}/metrics"
    urls["gateway"] = f"http://{settings.host}:{settings.gateway_port}/metrics"
    return urls


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherSettings]:
    upstream = RecordingUpstream().start()
    settings = stack_settings(tmp_path_factory.mktemp("observed"), upstream.base_url)
    settings = settings.model_copy(update={"metrics_port": free_metrics_base()})
    try:
        with running_stack(settings):
            yield settings
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def exported(stack: LauncherSettings) -> dict[str, set[str]]:
    """Service -> every sample name its /metrics can expose, scraped live."""
    # one chat turn, so every service has done its work once
    reply = httpx.post(
        f"{gateway_url(stack)}/chat/completions",
        json={"model": "any", "messages": [{"role": "user", "content": "I like tea."}]},
        headers={"Authorization": "Bearer sk-observer"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    names: dict[str, set[str]] = {}
    for service, url in metrics_urls(stack).items():
        text = httpx.get(url, timeout=10).raise_for_status().text
        names[service] = {
            family.name + suffix
            for family in text_string_to_metric_families(text)
            for suffix in SUFFIXES.get(family.type, ("",))
        }
    return names


def test_prometheus_config_and_rules_pass_promtool() -> None:
    run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    run_promtool("check", "rules", *map(str, RULE_FILES))
    run_promtool("test", "rules", *map(str, sorted((PROMETHEUS / "tests").glob("*.yml"))))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses PromQL only inside rule files: wrap each query as a recording rule
    queries = [q.replace("$__rate_interval", "5m") for q in dashboard_queries()]
    assert queries
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query:{i}", "expr": q} for i, q in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    run_promtool("check", "rules", str(path))


def test_prometheus_scrapes_every_service_on_its_metrics_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    scraped: set[tuple[str, str]] = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            scraped |= {tuple(t.rsplit(":", 1)) for t in static["targets"]}  # type: ignore[misc]
        for dns in job.get("dns_sd_configs", []):
            scraped |= {(name, str(dns["port"])) for name in dns["names"]}
    for name, svc in load_compose()["services"].items():
        env = svc.get("environment") or {}
        ports = [v for k, v in env.items() if k.endswith("_METRICS_PORT") and v != "0"]
        if name == "gateway":
            ports = [env["BIONIC_GATEWAY_PORT"]]  # the gateway serves /metrics on its API
        for port in ports:
            assert (name, port) in scraped, f"Prometheus does not scrape {name}:{port}"
    by_dns = {name for job in config["scrape_configs"] for d in job.get("dns_sd_configs", [])
              for name in d["names"]}  # fmt: skip
    assert "embedder" in by_dns, "embedder replicas must be discovered by DNS"


def test_every_charted_and_alerted_metric_is_exported(exported: dict[str, set[str]]) -> None:
    everything = set().union(*exported.values())
    recorded = recording_rules()
    for expr in recorded.values():
        for name in OUR_SERIES.findall(expr):
            assert name in everything, f"recording rule uses {name}, which no service exports"
    for source, exprs in (("dashboard", dashboard_queries()), ("alert", alert_exprs())):
        for expr in exprs:
            names = OUR_SERIES.findall(expr)
            assert names, f"{source} query of nothing of ours: {expr}"
            for name in names:
                known = recorded if ":" in name else everything
                assert name in known, f"{source} queries {name}, which is not exported: {expr}"


def test_each_service_exports_its_own_metrics(exported: dict[str, set[str]]) -> None:
    for service in ("gateway", "embedder", "worker"):
        assert any(n.startswith(f"bionic_{service}_") for n in exported[service]), service


def test_container_healthcheck_probes_real_services(stack: LauncherSettings) -> None:
    def probe(url: str) -> int:
        return subprocess.run([sys.executable, str(HEALTHCHECK), url], check=False).returncode

    (closed,) = free_ports(1)
    assert probe(f"http://{stack.host}:{stack.gateway_port}/health") == 0
    assert probe(f"grpc://{stack.host}:{stack.memory_port}") == 0
    assert probe(f"grpc://{stack.host}:{stack.embedder_port}") == 0
    assert probe(f"grpc://{stack.host}:{closed}") == 1
    assert probe(f"http://{stack.host}:{closed}/health") == 1


def test_dashboard_loads_with_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    assert dashboard["uid"] and dashboard["title"]
    assert {"row", "timeseries", "stat"} <= {p["type"] for p in dashboard["panels"]}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]
            assert panel["targets"], panel["title"]
