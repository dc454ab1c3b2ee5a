"""memory.summarize through a real worker: the local llama.cpp SmolLM2 writes a summary
within the bound; an upstream that errs or times out gets the fallback, once, no retry."""

from __future__ import annotations

from bionic_common.clients import MemoryClient
from bionic_common.memory_types import Memory, Role, Scope
from bionic_common.tasks import REMEMBER_EXCHANGE, SUMMARIZE, SummarizeMessage
from bionic_worker import logic
from tests.support.stack import wait_for
from tests.worker.conftest import (
    SUMMARY_OPTIONS,
    WORKER_ENV,
    WorkerStack,
    memories_of,
    metric,
    new_scope,
    run_logic,
    tasks_done,
    with_memory,
)
from tests.worker.faulty_upstream import FaultyUpstream
from tests.worker.test_remember_exchange import exchange, send_and_wait
from tests.worker.test_summary import LONG

BOUND = 300  # BIONIC_WORKER_SUMMARY_MAX_CHARS's default, as the stack's worker runs it


def summarized(ws: WorkerStack, scope: Scope) -> Memory | None:
    found = [m for m in memories_of(ws, scope) if m.summary]
    return found[0] if found else None


def test_a_long_reply_gets_a_summary_from_smollm2(worker_stack: WorkerStack) -> None:
    ws = worker_stack
    scope = new_scope("smollm2")
    send_and_wait(ws, REMEMBER_EXCHANGE, [exchange(scope, LONG, "turn-long")])
    memory = wait_for(lambda: summarized(ws, scope), timeout=90)
    assert memory.text == LONG  # the full text stays
    assert memory.role == Role.ASSISTANT
    assert 0 < len(memory.summary) <= BOUND
    assert memory.metadata["summary_method"] in ("llm", "llm_sentence_cut"), memory.metadata
    assert memory.metadata["summary_model"] == "smollm2-135m-instruct"


def test_the_summary_logic_with_smollm2_directly(worker_stack: WorkerStack) -> None:
    scope = new_scope("smollm2-direct")
    stored = run_logic(
        worker_stack, lambda s: logic.remember_exchange(s, exchange(scope, LONG, "t"))
    )
    message = SummarizeMessage(tenant=scope.tenant, user=scope.user, memory_id=stored.id)
    done = run_logic(worker_stack, lambda s: logic.summarize(s, message, 500))
    assert done is not None
    memory, summary = done
    assert memory.summary == summary.text and len(summary.text) <= SUMMARY_OPTIONS.max_chars
    assert summary.method in ("llm", "llm_sentence_cut"), summary
    # Summarised once: a second run has nothing to do.
    assert run_logic(worker_stack, lambda s: logic.summarize(s, message, 500)) is None


def test_an_erring_or_hanging_upstream_gets_the_fallback_without_retries(
    worker_stack: WorkerStack,
) -> None:
    ws = worker_stack
    with FaultyUpstream("error", delay=6) as upstream:
        ws.restart(
            "worker",
            BIONIC_WORKER_UPSTREAM_BASE_URL=upstream.base_url,
            BIONIC_WORKER_SUMMARY_TIMEOUT="3",
        )
        try:
            for mode, reason in (("error", "HTTP 500"), ("slow", "timed out after 3s")):
                upstream.mode = mode
                upstream.calls = 0
                scope = new_scope(mode)

                async def store(c: MemoryClient, scope: Scope = scope) -> Memory:
                    memory, _ = await c.remember(
                        scope, Role.USER, LONG, [1.0] + [0.0] * 383, timeout=5
                    )
                    return memory

                memory = with_memory(ws.memory_target, store)
                message = SummarizeMessage(
                    tenant=scope.tenant, user=scope.user, memory_id=memory.id
                )
                send_and_wait(ws, SUMMARIZE, [message])
                (stored,) = memories_of(ws, scope)
                assert stored.metadata["summary_method"] == "sentence_cut"
                assert reason in stored.metadata["summary_fallback_reason"]
                assert stored.summary and len(stored.summary) <= BOUND
                assert upstream.calls == 1
            assert metric(ws, "bionic_worker_task_retries_total", task=SUMMARIZE) == 0
            assert tasks_done(ws, SUMMARIZE, "retry") == 0
            assert tasks_done(ws, SUMMARIZE, "failure") == 0
        finally:
            ws.restart(
                "worker",
                BIONIC_WORKER_UPSTREAM_BASE_URL=ws.upstream,
                BIONIC_WORKER_SUMMARY_TIMEOUT=WORKER_ENV["BIONIC_WORKER_SUMMARY_TIMEOUT"],
            )
