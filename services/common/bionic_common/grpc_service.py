"""Run an asyncio gRPC server the way every BionicMemory service does.

Health (grpc.health.v1) and reflection are always on; SIGTERM and SIGINT drain
in-flight calls for `grace` seconds before the server stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

# Bounded messages: 16 MiB is far above any sane batch, far below a memory blow-up.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
CHANNEL_OPTIONS = [
    *SERVER_OPTIONS,
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    # A restarted service is found again within a second or two, not after minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def new_server(max_concurrent_rpcs: int) -> grpc.aio.Server:
    return grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=max_concurrent_rpcs)


async def serve(
    server: grpc.aio.Server,
    address: str,
    service_names: Sequence[str],
    grace: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start `server` on `address`, report SERVING, and block until a stop signal, or
    until `stop` is set when given (by a caller whose main thread is busy elsewhere)."""
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC server to {address}")
    await server.start()
    for name in ("", *service_names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s", ", ".join(service_names), address)

    stopping = stop or asyncio.Event()
    if stop is None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("stopping: draining calls for up to %.1fs", grace)
    await health.enter_graceful_shutdown()
    await server.stop(grace)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")


def new_channel(target: str, retry_service: str | None = None) -> grpc.aio.Channel:
    """A channel that resolves every address behind `target` and balances across them.

    With `retry_service` (a full service name whose calls are all idempotent), a call that
    fails UNAVAILABLE — say its replica died mid-call — is retried on another replica.
    """
    options = list(CHANNEL_OPTIONS)
    if retry_service is not None:
        options.append(("grpc.service_config", json.dumps(_retry_config(retry_service))))
    return grpc.aio.insecure_channel(target, options=options)


def _retry_config(service: str) -> dict[str, object]:
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": service}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
