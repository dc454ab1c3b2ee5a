"""Run the embedder: `python -m bionic_embedder`."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading

from prometheus_client import REGISTRY, start_http_server

from bionic.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from bionic_common.grpc_service import new_server, serve
from bionic_common.logs import setup_logging
from bionic_embedder.batcher import Batcher
from bionic_embedder.config import EmbedderSettings
from bionic_embedder.metrics import EmbedderMetrics
from bionic_embedder.model import EmbeddingModel, PrecisionRefused
from bionic_embedder.servicer import EmbedderServicer

log = logging.getLogger("bionic_embedder")


async def serve_embedder(
    settings: EmbedderSettings,
    model: EmbeddingModel,
    batcher: Batcher,
    stop: asyncio.Event,
) -> None:
    """The gRPC side, on the event loop of its own thread, until `stop` is set."""
    server = new_server(settings.max_concurrent_rpcs)
    embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(
        EmbedderServicer(batcher, model, settings), server
    )
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host)
    await serve(
        server,
        f"{settings.host}:{settings.port}",
        [embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"].full_name],
        settings.grace_seconds,
        on_stop=batcher.close,
        stop=stop,
    )


def run(settings: EmbedderSettings) -> None:
    """Inference on the main thread (see bionic_embedder.batcher), gRPC on another; a stop
    signal stops the server, which then stops the batcher."""
    model = EmbeddingModel(settings)  # loads, warms up and runs the quality gate
    metrics = EmbedderMetrics(REGISTRY)
    metrics.describe(model)
    batcher = Batcher(
        model,
        metrics,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait=settings.max_wait_ms / 1000,
        queue_size=settings.queue_size,
        pass_overhead_tokens=settings.pass_overhead_tokens,
    )
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def on_signal(signum: int, frame: object) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    failure: list[BaseException] = []

    def grpc_side() -> None:
        try:
            loop.run_until_complete(serve_embedder(settings, model, batcher, stop))
        except BaseException as exc:  # handed to the main thread, which raises it
            failure.append(exc)
        finally:
            batcher.stop()  # the server is gone: so is the inference loop's reason to run
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    server = threading.Thread(target=grpc_side, name="grpc")
    server.start()
    batcher.run(loop)
    server.join()
    if failure:
        raise failure[0]


def main() -> None:
    settings = EmbedderSettings()
    setup_logging("embedder", settings.log_level)
    try:
        run(settings)
    except PrecisionRefused as exc:
        log.error("refusing to start: %s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
