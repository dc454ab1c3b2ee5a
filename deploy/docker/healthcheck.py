"""Container health probe: `bionic-healthcheck [URL]`, exit 0 when the service answers.

URL (or $BIONIC_HEALTHCHECK): `grpc://host:port` asks grpc.health.v1 for SERVING;
`http://…` wants a 200. Standard library only for HTTP, so the llm image can use it too.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT = 3.0


def grpc_serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:  # noqa: S310 - our own URL
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def healthy(url: str) -> bool:
    if url.startswith("grpc://"):
        return grpc_serving(url.removeprefix("grpc://"))
    if url.startswith(("http://", "https://")):
        return http_ok(url)
    raise SystemExit(f"unsupported health URL {url!r}: use grpc://host:port or http(s)://…")


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BIONIC_HEALTHCHECK", "")
    if not url:
        raise SystemExit("no health URL: pass one or set BIONIC_HEALTHCHECK")
    sys.exit(0 if healthy(url) else 1)


if __name__ == "__main__":
    main()
