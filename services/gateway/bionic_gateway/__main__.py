"""Run the gateway: `python -m bionic_gateway`."""

from __future__ import annotations

import gc

import uvicorn

from bionic_common.logs import setup_logging
from bionic_gateway.app import create_app
from bionic_gateway.config import GatewaySettings
from bionic_gateway.requests import setup_request_logging


def main() -> None:
    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level)
    setup_request_logging()
    app = create_app(settings)
    # What is alive now (modules, routes, models: ~100k objects) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it on a
    # chat turn (one every few turns, ~0.7 ms each).
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the gateway logs its own access line, with the request id
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
