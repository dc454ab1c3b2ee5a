"""The memory service as a real process, through its gRPC API and the shared client."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import replace
from typing import TypeVar

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bionic.memory.v1 import memory_pb2 as pb
from bionic.memory.v1 import memory_pb2_grpc as pb_grpc
from bionic_common.clients import MemoryClient
from bionic_common.memory_types import Exported, Memory, Role, Scope, Tier
from tests.memory.server import MemoryProcess

DIM = 8
T = TypeVar("T")


def vec(i: int) -> list[float]:
    v = [0.0] * DIM
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = 0.1
    return v


class Api:
    """A MemoryClient driven from synchronous tests on one event loop."""

    def __init__(self, target: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = self.run(self._client(target))

    @staticmethod
    async def _client(target: str) -> MemoryClient:
        return MemoryClient(target)

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def all(self, scope: Scope) -> list[Memory]:
        async def read() -> list[Memory]:
            found: list[Memory] = []
            token = ""
            while True:
                page, token = await self.client.list_page(scope, 100, token, timeout=10)
                found += page
                if not token:
                    return found

        return self.run(read())

    def close(self) -> None:
        self.run(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryProcess]:
    process = MemoryProcess(tmp_path_factory.mktemp("memory"), DIM).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(server: MemoryProcess) -> Iterator[Api]:
    a = Api(server.target)
    yield a
    a.close()


async def one_item(item: Exported) -> AsyncIterator[Exported]:
    yield item


def code_of(api: Api, call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        api.run(call)
    return info.value.code()


def test_bad_input_gets_clear_status_codes_and_stores_nothing(
    api: Api, server: MemoryProcess
) -> None:
    scope = Scope(f"bad-{uuid.uuid4().hex[:6]}", "u")
    other = Scope(scope.tenant, "other")
    kept, _ = api.run(api.client.remember(scope, Role.USER, "kept", vec(0)))
    for _ in range(3):
        api.run(api.client.remember(scope, Role.USER, f"fact {_}", vec(_ + 1)))
    invalid = [
        api.client.recall(Scope("", "u"), "x", vec(0)),  # no tenant
        api.client.recall(Scope(scope.tenant, ""), "x", vec(0)),  # no user
        api.client.recall(scope, "  ", vec(0)),
        api.client.recall(scope, "x", vec(0) + [1.0]),
        api.client.recall(scope, "x" * 1_000_000, vec(0)),
        api.client.recall(scope, "x", [float("nan")] + vec(0)[1:]),
        api.client.remember(scope, Role.USER, "x", [float("inf")] + vec(0)[1:]),
        api.client.update(scope, kept.id, text="new text without its vector"),
        api.client.get(scope, "not-a-uuid"),
        api.client.search(scope, vec(0), now=float("nan")),
        api.client.scan_for_suppression(scope, similarity_threshold=2.0),
        # JSON has no NaN or infinity: a client other than the gateway can still send them
        api.client.remember(scope, Role.USER, "x", vec(0), metadata={"score": float("nan")}),
        api.client.recall(scope, "x", vec(0), metadata={"n": {"deep": [float("inf")]}}),
        api.client.update(scope, kept.id, metadata={"score": float("-inf")}),
        api.client.import_(
            scope, one_item(Exported(replace(kept, metadata={"x": math.nan}), vec(0)))
        ),
    ]
    for call in invalid:
        assert code_of(api, call) == grpc.StatusCode.INVALID_ARGUMENT
    _, token = api.run(api.client.list_page(scope, page_size=2))
    assert token
    assert code_of(api, api.client.list_page(other, 2, token)) == grpc.StatusCode.INVALID_ARGUMENT
    for intruder in (other, Scope("unknown-tenant", "u")):
        assert code_of(api, api.client.get(intruder, kept.id)) == grpc.StatusCode.NOT_FOUND
        assert code_of(api, api.client.update(intruder, kept.id, pinned=True)) == (
            grpc.StatusCode.NOT_FOUND
        )
        assert code_of(api, api.client.merge(intruder, kept.id, [])) == grpc.StatusCode.NOT_FOUND
    assert code_of(api, api.client.get(scope, str(uuid.uuid4()))) == grpc.StatusCode.NOT_FOUND

    async def unspecified_role() -> None:
        stub = pb_grpc.MemoryServiceStub(api.client._channel)
        await stub.Remember(
            pb.RememberRequest(scope=pb.Scope(tenant="t", user="u"), text="x", vector=vec(0))
        )

    async def torn_packed_vector() -> None:
        stub = pb_grpc.MemoryServiceStub(api.client._channel)
        await stub.Recall(
            pb.RecallRequest(scope=pb.Scope(tenant="t", user="u"), text="x", packed_vector=b"12345")
        )

    assert code_of(api, unspecified_role()) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(api, torn_packed_vector()) == grpc.StatusCode.INVALID_ARGUMENT
    metrics = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    refused = 'bionic_memory_rpc_refused_total{code="INVALID_ARGUMENT",method="Recall"}'
    assert float(metrics.split(refused)[1].split()[0]) >= 6
    held = 'bionic_memory_memories{tier="ltm"}'  # counted on the tier index at scrape time
    assert float(metrics.split(held)[1].split()[0]) >= 4
    assert sorted(m.text for m in api.all(scope)) == ["fact 0", "fact 1", "fact 2", "kept"]
    assert api.run(api.client.get(scope, kept.id)).pinned is False


def named_call(
    client: MemoryClient, op: str, caller: Scope, memory_id: str, members: list[str]
) -> Awaitable[Memory]:
    if op == "get":
        return client.get(caller, memory_id)
    if op == "update":
        return client.update(caller, memory_id, metadata={"touched": True})
    return client.merge(caller, memory_id, members)


SCOPES = [Scope(f"tenant-{t}", f"user-{u}") for t in range(3) for u in range(2)]
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["remember", "recall", "get", "update", "delete", "merge", "search", "forget"]
        ),
        st.integers(0, len(SCOPES) - 1),  # the scope that calls
        st.integers(0, 40),  # which known memory (of any scope) it names, or which text
    ),
    min_size=5,
    max_size=30,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_no_call_reads_or_changes_another_scopes_memories(api: Api, ops: list) -> None:  # type: ignore[type-arg]
    """Random interleaved calls from many tenants and users, each naming memories of any
    scope: every answer is from the caller's scope, and each scope ends with exactly what
    its own calls left there."""
    run = uuid.uuid4().hex[:8]
    scopes = [Scope(f"{s.tenant}-{run}", s.user) for s in SCOPES]
    model: dict[Scope, dict[str, str]] = {s: {} for s in scopes}  # scope -> id -> text
    known: list[tuple[Scope, str]] = []  # every long-term memory id ever seen, with its owner
    for op, caller_index, n in ops:
        caller = scopes[caller_index]
        target = known[n % len(known)] if known else None
        mine = target is not None and target[0] == caller
        if op in ("remember", "recall"):
            text = f"note {n % 5}"
            if op == "remember":
                memory, _ = api.run(api.client.remember(caller, Role.USER, text, vec(n)))
                stored = [memory]
            else:
                recall = api.run(api.client.recall(caller, text, vec(n)))
                assert all(m.scope == caller for m in recall.memories)
                stored = [recall.stored] if recall.stored else []
            for memory in stored:
                assert memory.scope == caller
                model[caller][memory.id] = memory.text
                known.append((caller, memory.id))
        elif op == "search":
            assert all(m.scope == caller for m in api.run(api.client.search(caller, vec(n), 50)))
        elif op == "forget":
            api.run(api.client.forget_user(caller))
            model[caller].clear()
        elif target is not None:
            owner, memory_id = target
            exists = memory_id in model[owner]
            if op == "delete":
                deleted = api.run(api.client.delete(caller, memory_id))
                assert deleted == (mine and exists)
                if deleted:
                    del model[owner][memory_id]
                continue
            members = [i for _, i in known[-3:]]
            if mine and exists:
                memory = api.run(named_call(api.client, op, caller, memory_id, members))
                assert memory.scope == caller and memory.id == memory_id
                if op == "merge":
                    for member_owner, member in known[-3:]:
                        if member_owner == caller and member != memory_id:
                            model[caller].pop(member, None)
            else:
                call = named_call(api.client, op, caller, memory_id, members)
                assert code_of(api, call) == grpc.StatusCode.NOT_FOUND
    for scope in scopes:
        held = {m.id: m.text for m in api.all(scope) if m.tier == Tier.LONG_TERM}
        assert held == model[scope]
        assert all(m.scope == scope for m in api.all(scope))


def test_a_recall_that_stored_makes_the_workers_retry_of_its_turn_a_no_op(api: Api) -> None:
    """The gateway's Recall stored the message but its answer was lost, so the gateway
    queued remember_user_turn with the same request id: the retry changes nothing."""
    scope = Scope(f"retry-{uuid.uuid4().hex[:6]}", "u")
    api.run(api.client.remember(scope, Role.USER, "green tea", vec(0)))
    recall = api.run(
        api.client.recall(
            scope, "tea again", vec(0), metadata={"request_id": "r1"}, idempotency_key="r1"
        )
    )
    before = {(m.tier, m.text): m.strength for m in api.all(scope)}
    retried, created = api.run(
        api.client.remember(
            scope, Role.USER, "tea again", vec(0), idempotency_key="r1", reinforce_related=True
        )
    )
    assert recall.stored is not None and retried.id == recall.stored.id and not created
    assert {(m.tier, m.text): m.strength for m in api.all(scope)} == before


def test_a_large_import_is_written_in_bounded_batches(api: Api, server: MemoryProcess) -> None:
    """Each store write of an import holds at most IMPORT_BATCH_BYTES (and one more item),
    far under the free space the disk guard keeps: 40 texts of 300 kB go in two writes."""
    scope = Scope(f"big-{uuid.uuid4().hex[:6]}", "u")
    text = "记" * 99_990  # about the longest text allowed, 3 bytes a character

    def writes() -> float:
        metrics = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
        count = 'bionic_memory_rpc_seconds_count{method="Import"}'
        return float(metrics.split(count)[1].split()[0]) if count in metrics else 0.0

    async def items() -> AsyncIterator[Exported]:
        for i in range(40):
            memory = Memory(
                id=str(uuid.uuid4()), scope=scope, role=Role.USER, tier=Tier.LONG_TERM,
                text=f"{i} {text}", created_at=1_000.0 + i, updated_at=1_000.0 + i, strength=1.0,
            )  # fmt: skip
            yield Exported(memory, vec(i))

    before = writes()
    assert api.run(api.client.import_(scope, items(), timeout=120)) == (40, 0)
    assert writes() - before == 2
    assert len(api.all(scope)) == 40
