"""Run the decay worker, `python -m bionic_worker`, or its beat, `python -m bionic_worker beat`.

Worker and beat are separate processes: any number of workers, exactly one beat.
"""

from __future__ import annotations

import os
import sys

from prometheus_client import REGISTRY, start_http_server

from bionic_common.logs import setup_logging
from bionic_worker.app import QUEUE, create_app
from bionic_worker.broker import queue_length
from bionic_worker.config import WorkerSettings
from bionic_worker.metrics import QueueLength, WorkerMetrics

USAGE = "usage: python -m bionic_worker [worker|beat]"


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else "worker"
    if role not in ("worker", "beat"):
        raise SystemExit(USAGE)
    settings = WorkerSettings()
    setup_logging(role, settings.log_level)
    app = create_app(settings, WorkerMetrics(REGISTRY))
    if role == "beat":
        os.makedirs(os.path.dirname(os.path.abspath(settings.beat_schedule_file)), exist_ok=True)
        app.start(
            [
                "beat",
                f"--schedule={settings.beat_schedule_file}",
                f"--loglevel={settings.log_level}",
            ]
        )
        return
    if settings.metrics_port:
        connection = app.connection_for_read()
        REGISTRY.register(QueueLength(lambda: queue_length(connection, QUEUE), QUEUE))
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
