"""Run the gateway: `python -m bionic_gateway`."""

from __future__ import annotations

import logging

import uvicorn

from bionic_common.logs import setup_logging
from bionic_gateway.app import create_app
from bionic_gateway.config import GatewaySettings
from bionic_gateway.requests import setup_request_logging


def main() -> None:
    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level)
    setup_request_logging()
    # httpx logs every upstream call at INFO: a second line per chat turn, beside the
    # gateway's own access line, written on the event loop.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
