"""Chat completion streams checked while relayed: valid events go through byte for byte and
at once, a malformed stream ends in an OpenAI error event and `[DONE]`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bionic_gateway.app import create_app
from bionic_gateway.config import GatewaySettings
from bionic_gateway.sse import MAX_EVENT_BYTES, EventStream, MalformedStream
from tests.reliability.faulty_upstream import FaultyUpstream
from tests.support.recording_upstream import REPLY, RecordingUpstream

STREAM = (
    b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
    b": keep-alive comment\n\n"
    b'data: {"choices": [{"delta": {"content": "lo"}}]}\r\n\r\n'
    b'event: vendor\ndata: {\ndata: "usage": {"total_tokens": 3}}\n\n'
    b"data: [DONE]\n\n"
)


def checked(chunks: list[bytes]) -> tuple[list[bytes], list[Any], EventStream]:
    seen: list[Any] = []
    events = EventStream(seen.append)
    return [events.feed(c) for c in chunks], seen, events


def test_whole_events_go_through_at_once_and_byte_for_byte() -> None:
    events = STREAM.split(b"\n\n")
    chunks = [e + b"\n\n" for e in events[:-1]]
    relayed, seen, stream = checked(chunks)
    assert relayed == chunks  # nothing held back
    assert seen[-1] == {"usage": {"total_tokens": 3}} and len(seen) == 3
    stream.end()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_split_events_are_held_only_until_they_end(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    relayed, seen, stream = checked(chunks)
    assert b"".join(relayed) == STREAM and stream.done
    assert [e.get("choices", [{}])[0].get("delta") for e in seen] == [
        {"content": "Hel"},
        {"content": "lo"},
        None,
    ]
    for chunk, out in zip(chunks, relayed, strict=True):
        if chunk.endswith(b"\n\n"):  # an event ended in this chunk: nothing of it waits
            assert out.endswith(b"\n\n")


def test_what_follows_done_is_relayed_unchecked() -> None:
    relayed, _, stream = checked([b"data: [DONE]\n\nnot: an event", b"\x00 more"])
    assert relayed == [b"data: [DONE]\n\nnot: an event", b"\x00 more"]
    stream.end()


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: {this is not json\n\n"],
        [b'data: {"ok": 1}\n\ndata: \xff\xfe\x00 binary\n\n'],
        [b"data: [DONE] and more\n\n"],
    ],
)
def test_data_that_is_not_json_or_done_is_malformed(chunks: list[bytes]) -> None:
    with pytest.raises(MalformedStream):
        checked(chunks)


def test_a_stream_without_done_and_an_endless_event_are_malformed() -> None:
    _, _, stream = checked([b'data: {"ok": 1}\n\n', b"event: nonsense\n\n"])
    with pytest.raises(MalformedStream, match="without"):
        stream.end()
    with pytest.raises(MalformedStream, match="longer"):
        checked([b"data: " + b"x" * MAX_EVENT_BYTES])


@pytest.fixture(scope="module")
def gateway() -> Iterator[TestClient]:
    recorder = RecordingUpstream().start()
    faulty = FaultyUpstream(recorder.port).start()
    settings = GatewaySettings(
        upstream_base_url=faulty.base_url, broker_url="memory://", tenant_salt="test-salt"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
    faulty.stop()
    recorder.stop()


def chat(client: TestClient, model: str, stream: bool) -> Any:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers={"x-bionic-memory-mode": "off"})


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def test_a_garbage_event_stream_ends_in_an_error_event(gateway: TestClient) -> None:
    reply = chat(gateway, "garbage-sse", stream=True)
    assert reply.status_code == 200  # the status went out before the first event
    *events, done = sse_data(reply.text)
    assert done == "[DONE]" and len(events) == 1
    assert json.loads(events[0])["error"] == {
        "message": "the upstream sent a malformed event stream",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_a_garbage_answer_to_a_plain_request_is_502(gateway: TestClient) -> None:
    reply = chat(gateway, "garbage-sse", stream=False)
    assert reply.status_code == 502 and reply.json()["error"]["type"] == "server_error"


def test_a_valid_stream_still_reaches_the_client_whole(gateway: TestClient) -> None:
    data = sse_data(chat(gateway, "recorder", stream=True).text)
    assert data[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in data[:-1])
    assert text == REPLY
