"""The embedder as it runs: a real process started by the launcher, spoken to over gRPC."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sentence_transformers import SentenceTransformer

from bionic.embedder.v1 import embedder_pb2 as pb
from bionic.embedder.v1 import embedder_pb2_grpc as pb_grpc
from bionic_embedder.config import BUNDLED_MODEL
from bionic_embedder.model import resolve_model_path
from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.support.ports import free_port, free_port_run

SERVICE = "bionic.embedder.v1.EmbedderService"
EMBEDDER_METRICS_OFFSET = 10  # the launcher gives embedder i the metrics port base+10+i
QUEUE_SIZE = 3000


class Embedder:
    def __init__(self, address: str, metrics_url: str) -> None:
        self.address = address
        self.metrics_url = metrics_url

    def embed(self, texts: list[str], kind: int = pb.EMBED_KIND_DOCUMENT) -> pb.EmbedResponse:
        with grpc.insecure_channel(self.address) as channel:
            reply: pb.EmbedResponse = pb_grpc.EmbedderServiceStub(channel).Embed(
                pb.EmbedRequest(texts=texts, kind=kind), timeout=120
            )
            return reply

    def error(self, texts: list[str]) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            self.embed(texts)
        return caught.value


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedder]:
    metrics_port = free_port_run(1)
    settings = LauncherSettings(
        data_dir=str(tmp_path_factory.mktemp("embedder")),
        embedder_port=free_port(),
        metrics_port=metrics_port - EMBEDDER_METRICS_OFFSET,
        upstream_base_url="http://127.0.0.1:9/v1",  # not started: only the embedder runs
        startup_timeout=120,
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BIONIC_EMBEDDER_PRECISION", "fp32")  # exact parity with the reference
        env.setenv("BIONIC_EMBEDDER_QUEUE_SIZE", str(QUEUE_SIZE))
        stack = Stack(settings)
        try:
            stack.start_service("embedder")
            yield Embedder(
                f"{settings.host}:{settings.embedder_port}",
                f"http://{settings.host}:{metrics_port}/metrics",
            )
        finally:
            stack.stop()


def test_health_and_reflection(embedder: Embedder) -> None:
    with grpc.insecure_channel(embedder.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_info_describes_the_model(embedder: Embedder) -> None:
    with grpc.insecure_channel(embedder.address) as channel:
        info = pb_grpc.EmbedderServiceStub(channel).Info(pb.InfoRequest(), timeout=5)
    assert (info.model_id, info.dimension, info.max_tokens) == (BUNDLED_MODEL, 384, 256)
    assert (info.pooling, info.device) == (pb.POOLING_MEAN, "cpu")
    assert (info.precision, info.quality_min_cosine) == (pb.PRECISION_FP32, 1.0)
    assert "avx2" in info.cpu_features or not info.cpu_features  # whatever this CPU has
    assert info.query_instruction == ""


TEXTS = [
    "My name is Achen and I love jasmine tea.",
    "What do I like to drink?",
    "hi",
    "我喜欢茉莉花茶。",
    "The meeting with my sister Lin moved to Thursday because her flight was delayed. " * 4,
] * 8


async def embed_concurrently(address: str, texts: list[str]) -> list[pb.EmbedResponse]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.EmbedderServiceStub(channel)
        calls = [stub.Embed(pb.EmbedRequest(texts=[t]), timeout=60) for t in texts]
        return list(await asyncio.gather(*calls))


def test_concurrent_callers_are_batched_and_match_the_reference(embedder: Embedder) -> None:
    reference = SentenceTransformer(resolve_model_path(BUNDLED_MODEL), device="cpu")
    expected = reference.encode(TEXTS, batch_size=1, normalize_embeddings=True)
    replies = asyncio.run(embed_concurrently(embedder.address, TEXTS))
    single = np.array([r.embeddings[0].values for r in replies])
    assert max(r.timing.batch_size for r in replies) > 1  # callers shared forward passes
    together = np.array([e.values for e in embedder.embed(TEXTS).embeddings])
    for vectors in (single, together):
        assert np.sum(vectors * expected, axis=1).min() >= 0.9999


def test_packed_vectors_are_the_floats_bit_for_bit(embedder: Embedder) -> None:
    with grpc.insecure_channel(embedder.address) as channel:
        packed = pb_grpc.EmbedderServiceStub(channel).Embed(
            pb.EmbedRequest(texts=TEXTS[:5], encoding=pb.VECTOR_ENCODING_PACKED_F32), timeout=60
        )
    floats = embedder.embed(TEXTS[:5])
    assert (packed.dimension, floats.dimension, len(packed.embeddings)) == (384, 384, 0)
    assert floats.packed == b""
    vectors = np.frombuffer(packed.packed, dtype="<f4").reshape(5, 384)
    assert np.array_equal(vectors, np.array([e.values for e in floats.embeddings], np.float32))


def test_a_very_long_text_is_truncated_not_refused(embedder: Embedder) -> None:
    reply = embedder.embed(["word " * 20_000, "short"])  # 100k characters
    assert reply.prompt_tokens == 256 + 3  # its published max_seq_length
    assert len(reply.embeddings[0].values) == 384


def test_many_texts_in_one_request_are_split_into_batches(embedder: Embedder) -> None:
    texts = [f"message number {i} about tea" for i in range(2048)]
    reply = embedder.embed(texts)
    assert len(reply.embeddings) == 2048
    assert 1 <= reply.timing.batch_size <= 64
    first = embedder.embed(texts[:1]).embeddings[0].values
    assert np.dot(first, reply.embeddings[0].values) >= 0.9999


@pytest.mark.parametrize(
    ("texts", "code", "message"),
    [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "must not be empty"),
        (["fine", ""], grpc.StatusCode.INVALID_ARGUMENT, "texts[1] is empty"),
        (["  \n"], grpc.StatusCode.INVALID_ARGUMENT, "texts[0] is empty"),
        (["t"] * 10_000, grpc.StatusCode.INVALID_ARGUMENT, "at most 2048 texts"),
        (["x" * 200_001], grpc.StatusCode.INVALID_ARGUMENT, "the limit is 200000"),
        (["y" * 100_000] * 170, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
    ],
    ids=["no-texts", "empty", "blank", "10k-texts", "too-long", "17MB-message"],
)
def test_bad_input_gets_a_clear_error_and_the_service_stays_up(
    embedder: Embedder, texts: list[str], code: grpc.StatusCode, message: str
) -> None:
    error = embedder.error(texts)
    assert error.code() == code  # type: ignore[attr-defined]
    assert message in error.details()  # type: ignore[attr-defined]
    assert len(embedder.embed(["still here"]).embeddings) == 1


async def two_large_requests(address: str) -> list[pb.EmbedResponse | BaseException]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.EmbedderServiceStub(channel)
        texts = [f"text {i}" for i in range(2000)]
        calls = [stub.Embed(pb.EmbedRequest(texts=texts), timeout=120) for _ in range(2)]
        return list(await asyncio.gather(*calls, return_exceptions=True))


def test_a_full_queue_answers_resource_exhausted(embedder: Embedder) -> None:
    results = asyncio.run(two_large_requests(embedder.address))
    codes = sorted(
        "ok" if isinstance(r, pb.EmbedResponse) else r.code().name  # type: ignore[union-attr]
        for r in results
    )
    assert codes == ["RESOURCE_EXHAUSTED", "ok"]  # 2 x 2000 texts > a queue of 3000


def test_metrics_report_batches_queue_and_model(embedder: Embedder) -> None:
    embedder.embed(["count me", "and me"])
    text = httpx.get(embedder.metrics_url, timeout=5).text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["bionic_embedder_texts_total"] >= 2
    assert samples["bionic_embedder_tokens_total"] > samples["bionic_embedder_texts_total"]
    assert samples["bionic_embedder_padded_tokens_total"] >= samples["bionic_embedder_tokens_total"]
    assert samples["bionic_embedder_batch_size_count"] >= 1
    assert samples["bionic_embedder_queue_seconds_count"] >= 2
    assert samples["bionic_embedder_inference_seconds_count"] >= 1
    assert samples['bionic_embedder_rejected_total{reason="queue_full"}'] >= 1
    assert samples["bionic_embedder_queue_depth"] == 0
    assert samples["bionic_embedder_quality_min_cosine"] == 1.0
    info = next(k for k in samples if k.startswith("bionic_embedder_model_info"))
    assert 'precision="fp32"' in info and 'pooling="mean"' in info


def test_a_precision_under_the_gate_refuses_to_start() -> None:
    env = {
        **os.environ,
        "BIONIC_EMBEDDER_PRECISION": "int8",
        "BIONIC_EMBEDDER_PORT": str(free_port()),
        "BIONIC_EMBEDDER_METRICS_PORT": "0",
    }
    run = subprocess.run(
        [sys.executable, "-m", "bionic_embedder"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2
    assert "refusing to start: precision int8 reaches a minimum cosine" in run.stderr
    assert "BIONIC_EMBEDDER_FORCE_PRECISION" in run.stderr
