"""memory.prune_decayed and cluster suppression on seeded stores with known answers:
directly, through a worker on each broker, and on beat's schedule."""

from __future__ import annotations

import math
import time

import numpy as np

from bionic_common.clients import MemoryClient
from bionic_common.memory_types import Memory, Role, Scope, Tier
from bionic_common.tasks import PRUNE_DECAYED, SUPPRESS_CLUSTERS, SUPPRESS_SCOPE
from bionic_worker import logic
from tests.support.stack import wait_for
from tests.worker.conftest import (
    WorkerStack,
    memories_of,
    metric,
    new_scope,
    run_logic,
    tasks_done,
    with_memory,
)
from tests.worker.test_remember_exchange import send_and_wait

DAY = 86400.0
LTM_K = -math.log(0.211) / (31 * DAY)  # the 31-day point of the Ebbinghaus curve
LTM_THRESHOLD = 0.211
DIM = 384


def unit(i: int, noise: float = 0.0, seed: int = 0) -> list[float]:
    v = np.zeros(DIM)
    v[i] = 1.0
    v += np.random.default_rng(seed).normal(0, noise, DIM)
    return list(v / np.linalg.norm(v))


def expires_at(strength: float, t0: float) -> float:
    return t0 + math.log(strength / LTM_THRESHOLD) / LTM_K


def seed_decay(ws: WorkerStack, scope: Scope) -> set[str]:
    """Five memories with closed-form expiries; returns the texts that must survive."""
    now = time.time()
    reinforced = math.exp(-LTM_K * 5 * DAY) + 1  # stored at -40 d, again at -35 d
    twice_early = math.exp(-LTM_K * 0.5 * DAY) + 1  # stored at -50 d, again at -49.5 d
    assert expires_at(1.0, now - 32 * DAY) < now  # A: forgotten
    assert expires_at(1.0, now - 30 * DAY) > now  # B: kept
    assert expires_at(reinforced, now - 35 * DAY) > now  # C: kept
    assert expires_at(twice_early, now - 49.5 * DAY) < now  # E: forgotten

    async def seed(c: MemoryClient) -> None:
        writes = [
            ("A", now - 32 * DAY, False),
            ("B", now - 30 * DAY, False),
            ("C", now - 40 * DAY, False),
            ("C", now - 35 * DAY, False),
            ("D", now - 60 * DAY, True),  # pinned: never expires
            ("E", now - 50 * DAY, False),
            ("E", now - 49.5 * DAY, False),
        ]
        for name, at, pinned in writes:
            await c.remember(
                scope,
                Role.USER,
                f"memory {name}",
                unit(ord(name)),
                pinned=pinned,
                now=at,
                timeout=5,
            )

    with_memory(ws.memory_target, seed)
    return {"memory B", "memory C", "memory D"}


def long_term(ws: WorkerStack, scope: Scope) -> dict[str, Memory]:
    return {m.text: m for m in memories_of(ws, scope) if m.tier == Tier.LONG_TERM}


def test_prune_logic_forgets_exactly_the_expired(worker_stack: WorkerStack) -> None:
    scope = new_scope("prune-direct")
    survivors = seed_decay(worker_stack, scope)
    pruned = run_logic(worker_stack, lambda s: logic.prune_decayed(s, Tier.LONG_TERM))
    assert (pruned.forgotten_long_term, pruned.archived) == (2, 0)
    assert set(long_term(worker_stack, scope)) == survivors


def test_the_prune_task_forgets_exactly_the_expired(worker_stack: WorkerStack) -> None:
    ws = worker_stack
    scope = new_scope("prune-task")
    survivors = seed_decay(ws, scope)
    before = metric(ws, "bionic_worker_memories_forgotten_total", tier="ltm")
    send_and_wait(ws, PRUNE_DECAYED, ["ltm"])
    assert set(long_term(ws, scope)) == survivors
    assert metric(ws, "bionic_worker_memories_forgotten_total", tier="ltm") == before + 2


def test_beat_schedules_the_prunes(worker_stack: WorkerStack) -> None:
    ws = worker_stack
    scope = new_scope("beat")
    survivors = seed_decay(ws, scope)
    ws.restart("beat", BIONIC_WORKER_PRUNE_LONG_TERM_EVERY="1")
    try:
        wait_for(lambda: set(long_term(ws, scope)) == survivors, timeout=30)
    finally:
        ws.restart("beat", BIONIC_WORKER_PRUNE_LONG_TERM_EVERY="3600")


def seed_clusters(ws: WorkerStack, scope: Scope) -> dict[str, list[str]]:
    """Two clusters of near-duplicates (x: 3, y: 2) and two loners; returns ids by group."""
    groups = {"x": (0, 3), "y": (1, 2), "lone-a": (2, 1), "lone-b": (3, 1)}

    async def seed(c: MemoryClient) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {}
        for name, (axis, n) in groups.items():
            for j in range(n):
                memory, _ = await c.remember(
                    scope,
                    Role.USER,
                    f"{name} {j}",
                    unit(axis, noise=0.002, seed=j),
                    metadata={f"from_{name}_{j}": True},
                    timeout=5,
                )
                ids.setdefault(name, []).append(memory.id)
        return ids

    return with_memory(ws.memory_target, seed)


def assert_suppressed(ws: WorkerStack, scope: Scope, ids: dict[str, list[str]]) -> None:
    kept = {m.id: m for m in memories_of(ws, scope) if m.tier == Tier.LONG_TERM}
    assert len(kept) == 4
    for name, size in (("x", 3), ("y", 2), ("lone-a", 1), ("lone-b", 1)):
        (representative,) = [kept[i] for i in ids[name] if i in kept]
        assert abs(representative.strength - size) < 1e-3  # the cluster's summed strength
        assert sorted(representative.source_ids) == sorted(
            i for i in ids[name] if i != representative.id
        )
        assert set(representative.metadata) == {f"from_{name}_{j}" for j in range(size)}


def test_suppression_logic_merges_each_cluster_into_one(worker_stack: WorkerStack) -> None:
    scope = new_scope("suppress-direct")
    ids = seed_clusters(worker_stack, scope)
    done = run_logic(worker_stack, lambda s: logic.suppress_scope(s, scope, 0.99, 0, 10))
    assert (done.clusters, done.merged) == (2, 3)
    assert_suppressed(worker_stack, scope, ids)


def test_the_suppression_tasks_merge_each_cluster_into_one(worker_stack: WorkerStack) -> None:
    ws = worker_stack
    scope = new_scope("suppress-task")
    ids = seed_clusters(ws, scope)
    before = tasks_done(ws, SUPPRESS_SCOPE)
    scopes = with_memory(ws.memory_target, lambda c: _count_scopes(c))
    send_and_wait(ws, SUPPRESS_CLUSTERS, [])
    wait_for(lambda: tasks_done(ws, SUPPRESS_SCOPE) >= before + scopes, timeout=30)
    assert_suppressed(ws, scope, ids)


async def _count_scopes(c: MemoryClient) -> int:
    return len([s async for s in c.list_scopes(timeout=5)])
