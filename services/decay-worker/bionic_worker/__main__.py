"""Run the decay worker: `python -m bionic_worker`."""

from __future__ import annotations

from prometheus_client import start_http_server

from bionic_common.logs import setup_logging
from bionic_worker.app import create_app
from bionic_worker.config import WorkerSettings


def main() -> None:
    settings = WorkerSettings()
    setup_logging("worker", settings.log_level)
    app = create_app(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.concurrency}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    main()
