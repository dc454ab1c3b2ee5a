"""Evidence recall on LoCoMo: what chat would inject, against the labelled evidence turns.

Per conversation a fresh memory store (the embedded Qdrant engine in a temp folder) is
driven in-process through `MemoryService`'s public methods, the same path as the gRPC
service minus the wire: speaker A's turns go through `recall` (a user message), speaker
B's through `remember(reinforce_related=True)` (a reply, as the worker stores it), each at
its session's own time. Then every question is a dry-run recall (a preview: nothing is
stored or reinforced), one day after the last session.

Scores per question: evidence recall |gold ∩ injected| / |gold| over the turns' dia_id
metadata, any-hit and all-hit; at k memories and at token budgets (a method is asked for
enough memories to fill the budget, and the least relevant are dropped until the rendered
memory lines fit). Baselines in the same run: plain top-k cosine over every turn with the
same embedder, and the engine's own hybrid (BM25 + dense, reciprocal rank fusion).

Runs: each preset with no decay (its forgetting curve replaced by none) and on the
simulated clock (pruning, and archiving where the preset archives, every 10 minutes of
simulated time, as the worker's beat does).

    .venv/bin/python bench/locomo_recall.py                 # full run, report to stdout
    .venv/bin/python bench/locomo_recall.py --write-docs    # and into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import qdrant_edge as qe
from embed_cache import CACHE_DIR, EmbedCache
from locomo_data import CATEGORIES, Conversation, Dataset, load
from report import Table, replace_section

from bionic_common.memory_types import Memory, Role, Scope
from bionic_embedder.config import EmbedderSettings
from bionic_memory.config import MemorySettings
from bionic_memory.presets import no_decay
from bionic_memory.service import MemoryService
from bionic_memory.store.edge import EdgeStore

log = logging.getLogger("locomo_recall")

KS = (5, 10, 25, 50)
BUDGETS = (512, 1024, 2048, 4096)
ASK_MARGIN = 1.25  # memories asked per budget: margin x budget / mean line tokens
PRUNE_EVERY = 600.0  # the worker's short-term prune period (seconds)
QUESTION_DELAY = 86_400.0  # questions come a day after the last session
LINE_PREFIX = "- [2023-05-08 13:56] user: "  # how the gateway renders a memory line
DRAGON = {5: 0.567, 10: 0.662, 25: 0.767, 50: 0.827}  # LoCoMo paper, Table 3
SCOPE = Scope("bench", "locomo")
DOCS = Path(__file__).resolve().parents[1] / "docs"

Ranker = Callable[[int, int], list[str]]  # (question index, limit) -> dia_ids, best first


@dataclass(slots=True)
class Scores:
    """Per-question scores, by (budget label) -> list over questions."""

    recall: dict[str, list[float]]
    any_hit: dict[str, list[float]]
    all_hit: dict[str, list[float]]
    category: list[int]


def budget_labels() -> list[str]:
    return [f"k={k}" for k in KS] + [
        f"{b // 1024}k tok" if b >= 1024 else f"{b} tok" for b in BUDGETS
    ]


def new_scores() -> Scores:
    return Scores(defaultdict(list), defaultdict(list), defaultdict(list), [])


def add_score(scores: Scores, label: str, gold: frozenset[str], injected: list[str]) -> None:
    hit = len(gold & set(injected))
    scores.recall[label].append(hit / len(gold))
    scores.any_hit[label].append(float(hit > 0))
    scores.all_hit[label].append(float(hit == len(gold)))


def fit_budget(
    ids: list[str], scores: list[float], tokens: dict[str, int], budget: int
) -> list[str]:
    """Drop the least relevant until the lines fit `budget` tokens."""
    kept = sorted(zip(scores, range(len(ids)), ids, strict=True), reverse=True)
    total = sum(tokens[i] for i in ids)
    while kept and total > budget:
        _, _, dropped = kept.pop()
        total -= tokens[dropped]
    return [i for _, _, i in kept]


class Bench:
    def __init__(self, data: Dataset, cache: EmbedCache) -> None:
        self.data = data
        # Everything a worker process needs, precomputed (so a Bench pickles cheaply).
        self.vectors_of = {
            c.sample_id: (
                cache.embed([t.text for t in c.turns], query=False),
                cache.embed([q.text for q in c.questions], query=True),
            )
            for c in data.conversations
        }
        texts = [t.text for c in data.conversations for t in c.turns]
        counts = cache.count_tokens([LINE_PREFIX + t for t in texts])
        self.tokens = {
            (c.sample_id, t.dia_id): n
            for (c, t), n in zip(
                ((c, t) for c in data.conversations for t in c.turns), counts, strict=True
            )
        }
        self.mean_tokens = float(np.mean(counts))

    def vectors(
        self, conv: Conversation
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        return self.vectors_of[conv.sample_id]

    def ask(self, budget: int) -> int:
        return min(100, math.ceil(ASK_MARGIN * budget / self.mean_tokens))

    def score(
        self,
        conv: Conversation,
        rank: Callable[[int, int], tuple[list[str], list[float]]],
        scores: Scores,
    ) -> None:
        tokens = {d: self.tokens[(conv.sample_id, d)] for d in (t.dia_id for t in conv.turns)}
        labels = budget_labels()
        for qi, question in enumerate(conv.questions):
            scores.category.append(question.category)
            for label, k in zip(labels, KS, strict=False):
                ids, _ = rank(qi, k)
                add_score(scores, label, question.gold, ids)
            for label, budget in zip(labels[len(KS) :], BUDGETS, strict=True):
                ids, relevance = rank(qi, self.ask(budget))
                add_score(scores, label, question.gold, fit_budget(ids, relevance, tokens, budget))


# --- baselines ------------------------------------------------------------------------


def plain_scores(bench: Bench) -> Scores:
    """Plain top-k cosine over every turn."""
    scores = new_scores()
    for conv in bench.data.conversations:
        docs, queries = bench.vectors(conv)
        ids = [t.dia_id for t in conv.turns]
        similarity = queries @ docs.T

        def rank(
            qi: int, limit: int, sim: npt.NDArray[np.float32] = similarity, ids: list[str] = ids
        ) -> tuple[list[str], list[float]]:
            order = np.argsort(-sim[qi], kind="stable")[:limit]
            return [ids[i] for i in order], [float(sim[qi, i]) for i in order]

        bench.score(conv, rank, scores)
    return scores


def hybrid_scores(bench: Bench) -> Scores:
    """The engine's hybrid: BM25 sparse + dense, fused by reciprocal rank (k=5)."""
    scores = new_scores()
    bm25 = qe.Bm25(qe.Bm25Config(language="english"))
    for conv in bench.data.conversations:
        docs, queries = bench.vectors(conv)
        with tempfile.TemporaryDirectory() as folder:
            shard = qe.EdgeShard.create(
                folder,
                qe.EdgeConfig(
                    vectors={
                        "dense": qe.EdgeVectorParams(
                            size=docs.shape[1], distance=qe.Distance.Cosine
                        )
                    },
                    sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
                ),
            )
            shard.update(
                qe.UpdateOperation.upsert_points(
                    [
                        qe.Point(
                            i,
                            {"dense": docs[i].tolist(), "bm25": bm25.embed_document(t.text)},
                            {"dia_id": t.dia_id},
                        )
                        for i, t in enumerate(conv.turns)
                    ]
                )
            )

            def rank(
                qi: int,
                limit: int,
                shard: qe.EdgeShard = shard,
                queries: npt.NDArray[np.float32] = queries,
                conv: Conversation = conv,
            ) -> tuple[list[str], list[float]]:
                hits = shard.query(
                    qe.QueryRequest(
                        limit=limit,
                        prefetches=[
                            qe.Prefetch(
                                limit=max(limit, 100),
                                query=qe.Query.Nearest(queries[qi].tolist(), using="dense"),
                            ),
                            qe.Prefetch(
                                limit=max(limit, 100),
                                query=qe.Query.Nearest(
                                    bm25.embed_query(conv.questions[qi].text), using="bm25"
                                ),
                            ),
                        ],
                        query=qe.Fusion.Rrf(k=5),
                        with_payload=True,
                    )
                )
                return [h.payload["dia_id"] for h in hits], [h.score for h in hits]

            bench.score(conv, rank, scores)
            shard.close()
    return scores


# --- the memory service ---------------------------------------------------------------


@dataclass(slots=True)
class Replay:
    """What happened to the stores on the way."""

    pruned: int = 0
    archived: int = 0
    seconds: float = 0.0


def merge(parts: list[Scores]) -> Scores:
    merged = new_scores()
    for part in parts:
        for mine, theirs in (
            (merged.recall, part.recall),
            (merged.any_hit, part.any_hit),
            (merged.all_hit, part.all_hit),
        ):
            for label, values in theirs.items():
                mine[label].extend(values)
        merged.category.extend(part.category)
    return merged


def service_conversation(
    bench: Bench, settings: MemorySettings, clocked: bool, index: int
) -> tuple[Scores, Replay]:
    """One conversation replayed into a fresh store, then its questions (a worker's job)."""
    scores = new_scores()
    replay = Replay()
    started = time.perf_counter()
    conv = bench.data.conversations[index]
    docs, queries = bench.vectors(conv)
    with tempfile.TemporaryDirectory() as folder:
        store = EdgeStore(folder, docs.shape[1])
        service = MemoryService(store, settings)
        asked = conv.turns[-1].time + QUESTION_DELAY
        for now in replay_turns(service, conv, docs, clocked):
            prune(service, now, replay)  # as the worker's beat would, mid-replay
        if clocked:
            prune(service, asked, replay)

        def rank(qi: int, limit: int) -> tuple[list[str], list[float]]:
            recalled = service.recall(
                SCOPE,
                conv.questions[qi].text,
                queries[qi].tolist(),
                limit=limit,
                dry_run=True,
                now=asked,
            ).memories
            return [dia_id(m) for m in recalled], [m.score for m in recalled]

        bench.score(conv, rank, scores)
        store.close()
    replay.seconds = time.perf_counter() - started
    return scores, replay


def prune(service: MemoryService, now: float, replay: Replay) -> None:
    pruned = service.prune(now)
    replay.pruned += pruned.forgotten_long_term + pruned.forgotten_archive
    replay.archived += pruned.archived


def replay_turns(
    service: MemoryService, conv: Conversation, docs: npt.NDArray[np.float32], clocked: bool
) -> Iterator[float]:
    """Store every turn through the chat path; yield the instants a prune is due."""
    next_prune = conv.turns[0].time
    for turn, vector in zip(conv.turns, docs, strict=True):
        if clocked and turn.time >= next_prune:
            yield turn.time
            next_prune = turn.time + PRUNE_EVERY
        metadata = {"dia_id": turn.dia_id}
        if turn.speaker == conv.speaker_a:
            service.recall(SCOPE, turn.text, vector.tolist(), metadata=metadata, now=turn.time)
        else:
            service.remember(
                SCOPE,
                Role.ASSISTANT,
                turn.text,
                vector.tolist(),
                metadata=metadata,
                idempotency_key=turn.dia_id,
                now=turn.time,
                reinforce_related=True,
            )


def dia_id(memory: Memory) -> str:
    return str(memory.metadata.get("dia_id", ""))


# --- report ---------------------------------------------------------------------------


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def overall_table(runs: dict[str, Scores], field: str) -> Table:
    labels = budget_labels()
    table = Table(["method", *labels])
    for name, scores in runs.items():
        values = getattr(scores, field)
        table.add([name, *(f"{mean(values[label]):.3f}" for label in labels)])
    return table


def category_table(runs: dict[str, Scores], label: str) -> Table:
    table = Table(["method", *(f"{c} {n}" for c, n in CATEGORIES.items())])
    for name, scores in runs.items():
        pairs = list(zip(scores.recall[label], scores.category, strict=True))
        table.add(
            [
                name,
                *(f"{mean([v for v, cat in pairs if cat == c]):.3f}" for c in CATEGORIES),
            ]
        )
    return table


def plot(runs: dict[str, Scores], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, scores in runs.items():
        ax.plot(KS, [mean(scores.recall[f"k={k}"]) for k in KS], marker="o", label=name)
    ax.plot(KS, [DRAGON[k] for k in KS], "k--", marker="x", label="DRAGON (LoCoMo paper)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(KS, [str(k) for k in KS])
    ax.set_xlabel("memories injected (k)")
    ax.set_ylabel("evidence recall")
    ax.set_title("LoCoMo evidence recall (MiniLM, audited labels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(
    bench: Bench, runs: dict[str, Scores], replays: dict[str, Replay], args: argparse.Namespace
) -> str:
    questions = sum(len(c.questions) for c in bench.data.conversations)
    turns = sum(len(c.turns) for c in bench.data.conversations)
    lines = [
        "## LoCoMo evidence recall (`bench/locomo_recall.py`)",
        "",
        f"LoCoMo-10: {len(bench.data.conversations)} conversations, {turns} turns, "
        f"{questions} questions with evidence ({bench.data.relabelled} relabelled by the "
        f"audit, {bench.data.dropped_ids} evidence id(s) naming no turn dropped, "
        f"{bench.data.skipped} questions without evidence skipped). Embedder: "
        f"`{args.embedder_model}` ({args.embedder_precision}); token budgets counted "
        "with its tokenizer over the "
        f"rendered memory lines (mean {bench.mean_tokens:.1f} tokens per line).",
        "",
        "Evidence recall (mean |gold ∩ injected| / |gold|):",
        "",
        overall_table(runs, "recall").render(),
        "",
        "Any-hit (at least one evidence turn injected):",
        "",
        overall_table(runs, "any_hit").render(),
        "",
        "All-hit (every evidence turn injected):",
        "",
        overall_table(runs, "all_hit").render(),
        "",
        "Evidence recall at k = 10 by question category:",
        "",
        category_table(runs, "k=10").render(),
        "",
        "Replays through the memory service (simulated clock: what pruning did):",
        "",
    ]
    table = Table(["run", "forgotten (deleted)", "archived (moves)", "CPU seconds"])
    for name, replay in replays.items():
        table.add([name, str(replay.pruned), str(replay.archived), f"{replay.seconds:.0f}"])
    lines += [table.render(), ""]
    dragon = " / ".join(f"{DRAGON[k]:.3f}" for k in KS)
    lines.append(f"LoCoMo paper, DRAGON turn-level recall at k = 5/10/25/50: {dragon}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=0, help="first N only (0: all)")
    parser.add_argument("--presets", default="original,default", help="comma-separated")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--modes", default="no-decay,clock", help="no-decay, clock or both")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="MemorySettings override for every preset, as KEY=VALUE",
    )
    parser.add_argument("--embedder-model", default=EmbedderSettings().model)
    parser.add_argument("--embedder-precision", default="fp32", help="fp32, bf16, int8, auto")
    parser.add_argument(
        "--embedder-setting",
        action="append",
        default=[],
        help="extra EmbedderSettings field as KEY=VALUE (e.g. a precision)",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write the report into docs/benchmarks.md and the plot",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    extra = dict(item.split("=", 1) for item in args.embedder_setting)
    overrides = dict(item.split("=", 1) for item in args.set)
    cache = EmbedCache(
        EmbedderSettings(
            model=args.embedder_model,
            precision=args.embedder_precision,
            torch_threads=1,
            **extra,
        )
    )
    data = load()
    if args.conversations:
        data.conversations = data.conversations[: args.conversations]
    bench = Bench(data, cache)
    runs: dict[str, Scores] = {
        "plain top-k (cosine)": plain_scores(bench),
        "plain hybrid (BM25+dense RRF)": hybrid_scores(bench),
    }
    jobs: dict[str, list[Future[tuple[Scores, Replay]]]] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for preset in args.presets.split(","):
            for clocked in [mode == "clock" for mode in args.modes.split(",")]:
                settings = MemorySettings(preset=preset, **overrides)  # type: ignore[arg-type]
                name = f"{preset}, {'simulated clock' if clocked else 'no decay'}"
                jobs[name] = [
                    pool.submit(
                        service_conversation,
                        bench,
                        settings if clocked else no_decay(settings),
                        clocked,
                        index,
                    )
                    for index in range(len(data.conversations))
                ]
        replays: dict[str, Replay] = {}
        for name, futures in jobs.items():
            parts = [f.result() for f in futures]
            runs[name] = merge([scores for scores, _ in parts])
            replays[name] = Replay(
                pruned=sum(r.pruned for _, r in parts),
                archived=sum(r.archived for _, r in parts),
                seconds=sum(r.seconds for _, r in parts),
            )
            log.info("%s: recall@10 %.3f", name, mean(runs[name].recall["k=10"]))
    text = report(bench, runs, replays, args)
    (CACHE_DIR / "locomo_results.json").write_text(
        json.dumps(
            {
                name: {label: mean(s.recall[label]) for label in budget_labels()}
                for name, s in runs.items()
            },
            indent=1,
        )
    )
    if args.write_docs:
        plot(runs, DOCS / "locomo_recall.png")
        replace_section(
            DOCS / "benchmarks.md",
            "locomo",
            text + "\n\n![LoCoMo evidence recall](locomo_recall.png)",
        )
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
