"""The upstream OpenAI-compatible API."""

from __future__ import annotations

import httpx

from bionic_gateway.config import GatewaySettings

# Hop-by-hop and length headers are the gateway's own business, not the upstream's.
DROP_RESPONSE_HEADERS = {
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "server",
    "date",
}


class Upstream:
    def __init__(self, settings: GatewaySettings) -> None:
        self.base_url = settings.upstream_base_url.rstrip("/")
        self._key = settings.upstream_api_key
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout, connect=10.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    async def close(self) -> None:
        await self.client.aclose()


def passthrough_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() not in DROP_RESPONSE_HEADERS}
