"""POST /v1/embeddings through the gateway, served by two embedder replicas, all started
by the real launcher and driven with the official openai client."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import numpy as np
import pytest
from openai import OpenAI

from bionic.embedder.v1 import embedder_pb2 as pb
from bionic.embedder.v1 import embedder_pb2_grpc as pb_grpc
from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack
from tests.support.ports import free_port, free_port_run

EMBEDDER_METRICS_OFFSET = 10  # the launcher gives embedder i the metrics port base+10+i
REPLICAS = ("embedder-0", "embedder-1")


@dataclass
class System:
    stack: Stack
    settings: LauncherSettings

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.gateway_port}/v1"

    def client(self) -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key="k", max_retries=0)

    def post(self, body: object) -> httpx.Response:
        return httpx.post(f"{self.base_url}/embeddings", json=body, timeout=120)

    def replica_address(self, i: int) -> str:
        return f"{self.settings.host}:{self.settings.embedder_port + i}"

    def texts_served(self, i: int) -> float:
        port = self.settings.metrics_port + EMBEDDER_METRICS_OFFSET + i
        text = httpx.get(f"http://{self.settings.host}:{port}/metrics", timeout=5).text
        line = next(x for x in text.splitlines() if x.startswith("bionic_embedder_texts_total"))
        return float(line.split()[1])


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    settings = LauncherSettings(
        data_dir=str(tmp_path_factory.mktemp("embeddings")),
        gateway_port=free_port(),
        embedder_port=free_port_run(2),
        embedder_replicas=2,
        metrics_port=free_port_run(2) - EMBEDDER_METRICS_OFFSET,
        upstream_base_url="http://127.0.0.1:9/v1",  # unused: embeddings never go upstream
        startup_timeout=120,
    )
    stack = Stack(settings)
    try:
        for name in (*REPLICAS, "gateway"):  # memory and worker are not needed here
            stack.start_service(name, wait=False)
        for name in (*REPLICAS, "gateway"):
            stack.wait_healthy(name, settings.startup_timeout)
        yield System(stack, settings)
    finally:
        stack.stop()


def direct(address: str, texts: list[str]) -> np.ndarray:
    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.EmbedderServiceStub(channel).Embed(
            pb.EmbedRequest(texts=texts, kind=pb.EMBED_KIND_DOCUMENT), timeout=60
        )
        info = pb_grpc.EmbedderServiceStub(channel).Info(pb.InfoRequest(), timeout=5)
    assert info.model_id
    return np.array([e.values for e in reply.embeddings])


TEXTS = ["My name is Achen and I love jasmine tea.", "What do I like to drink?", "hi"]


def test_the_openai_client_gets_the_embedders_vectors(system: System) -> None:
    reply = system.client().embeddings.create(model="anything", input=TEXTS)  # base64 wire
    got = np.array([d.embedding for d in reply.data])
    assert [d.index for d in reply.data] == [0, 1, 2]
    assert reply.model == "bundled:all-MiniLM-L6-v2"  # the served model, from Info
    assert got.shape == (3, 384)
    assert np.sum(got * direct(system.replica_address(0), TEXTS), axis=1).min() >= 0.9999
    single = system.client().embeddings.create(model="m", input="hi")
    assert single.usage.prompt_tokens == single.usage.total_tokens == 3  # [CLS] hi [SEP]


def test_float_and_base64_carry_the_same_vector(system: System) -> None:
    as_float = system.post({"model": "m", "input": "tea", "encoding_format": "float"}).json()
    as_b64 = system.post({"model": "m", "input": "tea", "encoding_format": "base64"}).json()
    floats = np.array(as_float["data"][0]["embedding"], dtype=np.float32)
    decoded = np.frombuffer(base64.b64decode(as_b64["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(floats, decoded)
    assert as_float["object"] == "list" and as_float["data"][0]["object"] == "embedding"


def test_dimensions_keep_a_renormalised_prefix(system: System) -> None:
    full = np.array(system.post({"model": "m", "input": "tea"}).json()["data"][0]["embedding"])
    short = system.post({"model": "m", "input": "tea", "dimensions": 64}).json()
    vector = np.array(short["data"][0]["embedding"])
    assert vector.shape == (64,)
    assert np.allclose(vector, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)


def test_a_long_list_is_answered_in_order(system: System) -> None:
    texts = [f"message {i}: {'tea ' * (i % 7)}" for i in range(600)]  # three embedder calls
    data = system.post({"model": "m", "input": texts}).json()["data"]
    assert [d["index"] for d in data] == list(range(600))
    got = np.array([data[i]["embedding"] for i in (0, 299, 599)])
    expected = direct(system.replica_address(1), [texts[0], texts[299], texts[599]])
    assert np.sum(got * expected, axis=1).min() >= 0.9999


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "m", "input": ""}, 400, "input"),
        ({"model": "m", "input": ["fine", "  "]}, 400, "input[1] is blank"),
        ({"model": "m", "input": []}, 400, "input"),
        ({"model": "m", "input": ["t"] * 10_000}, 400, "at most 2048"),
        ({"model": "m", "input": [[1, 2, 3]]}, 400, "input"),
        ({"model": "m", "input": "tea", "dimensions": 4096}, 400, "at most 384"),
        ({"model": "m", "input": "tea", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"input": "tea"}, 400, "model"),
        ({"model": "m", "input": ["x" * 1_000_000] * 9}, 413, "larger than"),
    ],
    ids=["empty", "blank", "no-inputs", "10k", "tokens", "dims", "format", "no-model", "9MB"],
)
def test_bad_input_gets_an_openai_error_and_the_gateway_stays_up(
    system: System, body: object, status: int, message: str
) -> None:
    reply = system.post(body)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert system.post({"model": "m", "input": "still up"}).status_code == 200


def test_a_100k_character_text_is_truncated(system: System) -> None:
    reply = system.post({"model": "m", "input": "word " * 20_000})
    assert reply.status_code == 200
    assert reply.json()["usage"]["prompt_tokens"] == 256  # the model's max_seq_length


def test_both_replicas_serve_and_one_can_die(system: System) -> None:
    before = [system.texts_served(i) for i in (0, 1)]
    client = system.client()
    for i in range(40):
        client.embeddings.create(model="m", input=f"round robin {i}")
    after = [system.texts_served(i) for i in (0, 1)]
    assert after[0] > before[0] and after[1] > before[1]  # round robin reached both

    failures: list[BaseException] = []
    done = threading.Event()

    def steady_load() -> None:
        load = system.client()
        while not done.is_set():
            try:
                load.embeddings.create(model="m", input="are you still there?")
            except Exception as exc:  # noqa: BLE001 - every failure is what the test counts
                failures.append(exc)

    workers = [threading.Thread(target=steady_load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        system.stack.stop_service("embedder-0", kill=True)  # SIGKILL, mid-traffic
        for i in range(20):
            assert len(client.embeddings.create(model="m", input=f"after {i}").data) == 1
    finally:
        done.set()
        for w in workers:
            w.join(60)
        system.stack.start_service("embedder-0")
    assert failures == []
