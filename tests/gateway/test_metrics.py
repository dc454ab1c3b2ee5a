"""The gateway's metrics: the children bound once at start count in the same series as
`labels()` would, for every value a chat turn can give them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bionic_gateway.metrics import STAGES, TURN_OUTCOMES, GatewayMetrics


def test_bound_children_count_in_their_labelled_series() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.request("POST", "/v1/chat/completions", 200)
    metrics.request("POST", "/v1/chat/completions", 200)
    metrics.request("GET", "unmatched", 404)
    for outcome in TURN_OUTCOMES:
        metrics.turn(outcome, stream=outcome == "off")
    for n, stage in enumerate(STAGES, start=1):
        for _ in range(n):
            metrics.stage[stage].observe(0.001)
    metrics.token_kinds["completion"].inc(7)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    chat = {"method": "POST", "route": "/v1/chat/completions"}
    assert value("bionic_gateway_requests_total", **chat, status="200") == 2
    assert value("bionic_gateway_requests_total", method="GET", route="unmatched", status="404")
    assert value("bionic_gateway_chat_turns_total", memory="off", stream="true") == 1
    assert value("bionic_gateway_chat_turns_total", memory="on", stream="false") == 1
    assert value("bionic_gateway_chat_turns_total", memory="on", stream="true") == 0
    for n, stage in enumerate(STAGES, start=1):
        assert value("bionic_gateway_stage_seconds_count", stage=stage) == n
    assert value("bionic_gateway_tokens_total", kind="completion") == 7


def test_unknown_methods_count_as_one_series() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    for n in range(50):
        metrics.request(f"X-{n}", "unmatched", 405)
    series = [
        s.labels["method"]
        for m in registry.collect()
        if m.name == "bionic_gateway_requests"
        for s in m.samples
        if s.name.endswith("_total")
    ]
    assert series == ["OTHER"]
    assert (
        registry.get_sample_value(
            "bionic_gateway_requests_total",
            {"method": "OTHER", "route": "unmatched", "status": "405"},
        )
        == 50
    )
