"""memory.remember_exchange and memory.remember_user_turn: directly, and through a real
worker process on each broker."""

from __future__ import annotations

from bionic_common.memory_types import Memory, Recall, Role, Scope, Tier
from bionic_common.tasks import (
    REMEMBER_EXCHANGE,
    REMEMBER_USER_TURN,
    ExchangeMessage,
    UserTurnMessage,
)
from bionic_worker import logic
from tests.support.stack import wait_for
from tests.worker.conftest import WorkerStack, memories_of, new_scope, run_logic, tasks_done

TEA = "I love jasmine tea, especially the one my grandmother brews in spring."
REPLY = "Jasmine tea brewed by your grandmother in spring sounds lovely."


def exchange(scope: Scope, reply: str, request_id: str) -> ExchangeMessage:
    return ExchangeMessage(
        tenant=scope.tenant,
        user=scope.user,
        reply=reply,
        request_id=request_id,
        metadata={"request_id": request_id, "source": "test"},
    )


def user_turn(scope: Scope, text: str) -> UserTurnMessage:
    return UserTurnMessage(
        tenant=scope.tenant, user=scope.user, text=text, request_id="turn-u", metadata={}
    )


def by_tier(memories: list[Memory], tier: Tier) -> dict[str, Memory]:
    return {m.text: m for m in memories if m.tier == tier}


def send_and_wait(ws: WorkerStack, task: str, args: list[object]) -> None:
    """Queue one task and wait until the worker has run it to success."""
    before = tasks_done(ws, task)
    app = ws.producer()
    try:
        app.send_task(task, args=args)
    finally:
        app.close()
    wait_for(lambda: tasks_done(ws, task) >= before + 1, timeout=30)


def test_a_reply_delivered_twice_is_stored_once_and_reinforces_once(
    worker_stack: WorkerStack,
) -> None:
    scope = new_scope("dup")
    send_and_wait(worker_stack, REMEMBER_USER_TURN, [user_turn(scope, TEA)])
    send_and_wait(worker_stack, REMEMBER_EXCHANGE, [exchange(scope, REPLY, "turn-1")])
    first = memories_of(worker_stack, scope)
    long_term = by_tier(first, Tier.LONG_TERM)
    assert set(long_term) == {TEA, REPLY}
    assert long_term[TEA].role == Role.USER and long_term[REPLY].role == Role.ASSISTANT
    assert long_term[REPLY].strength == 1.0
    assert long_term[REPLY].metadata == {"request_id": "turn-1", "source": "test"}
    # The reply reinforced the message it relates to and promoted it into short-term memory.
    assert long_term[TEA].strength > 1.0
    assert TEA in by_tier(first, Tier.SHORT_TERM)

    send_and_wait(worker_stack, REMEMBER_EXCHANGE, [exchange(scope, REPLY, "turn-1")])  # again
    second = memories_of(worker_stack, scope)
    assert [(m.id, m.strength, m.updated_at) for m in second] == [
        (m.id, m.strength, m.updated_at) for m in first
    ]


def test_the_logic_stores_a_reply_and_a_missed_user_turn_directly(
    worker_stack: WorkerStack,
) -> None:
    scope = new_scope("direct")
    reply = run_logic(
        worker_stack, lambda s: logic.remember_exchange(s, exchange(scope, REPLY, "turn-9"))
    )
    turn = run_logic(worker_stack, lambda s: logic.remember_user_turn(s, user_turn(scope, TEA)))
    assert (reply.role, reply.text) == (Role.ASSISTANT, REPLY)
    assert (turn.role, turn.text) == (Role.USER, TEA)
    before = memories_of(worker_stack, scope)
    assert set(by_tier(before, Tier.LONG_TERM)) == {REPLY, TEA}
    again = run_logic(
        worker_stack, lambda s: logic.remember_exchange(s, exchange(scope, REPLY, "turn-9"))
    )
    assert again.id == reply.id
    after = memories_of(worker_stack, scope)
    assert [(m.id, m.strength) for m in after] == [(m.id, m.strength) for m in before]


def test_a_turn_its_failed_recall_had_stored_is_not_stored_again_by_the_worker(
    worker_stack: WorkerStack,
) -> None:
    """The gateway queues remember_user_turn when a turn's Recall fails; when that Recall
    had stored the message after all (its answer was lost), both carry the request id as
    their key and the task changes nothing: no second reinforcement, no promotion."""
    scope = new_scope("recalled")
    send_and_wait(worker_stack, REMEMBER_EXCHANGE, [exchange(scope, REPLY, "turn-0")])

    async def recall(services: logic.Services) -> Recall:
        embedded = await services.embedder.embed([TEA], "query", timeout=10)
        return await services.memory.recall(
            scope,
            TEA,
            embedded.array[0],
            metadata={"request_id": "turn-r"},
            idempotency_key="turn-r",
            timeout=10,
        )

    stored = run_logic(worker_stack, recall).stored
    before = memories_of(worker_stack, scope)
    retry = UserTurnMessage(
        tenant=scope.tenant,
        user=scope.user,
        text=TEA,
        request_id="turn-r",
        metadata={"request_id": "turn-r", "queued": "memory_degraded"},
    )
    send_and_wait(worker_stack, REMEMBER_USER_TURN, [retry])
    after = memories_of(worker_stack, scope)
    assert stored is not None and stored.id in {m.id for m in after}
    assert REPLY in by_tier(before, Tier.SHORT_TERM)  # the Recall promoted what it recalled
    assert [(m.id, m.strength, m.updated_at, m.metadata) for m in after] == [
        (m.id, m.strength, m.updated_at, m.metadata) for m in before
    ]
