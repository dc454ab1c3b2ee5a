"""A synthetic year of daily chat for a heavy user: do the hot tiers stay bounded, and
what does the archive hold and give back?

A deterministic generator (seeded) writes `--per-day` user messages a day, each followed by
a reply, for `--days` days, through the chat path (`recall` for the user, `remember` with
`reinforce_related` for the reply), with pruning every simulated hour of chat. Messages
are small talk about recurring topics or facts (a name, a date, a preference) that are
sometimes mentioned again weeks later. Vectors are synthetic: a topic direction plus a
message's own direction, so no embedder is needed; each fact carries a unique name, so a
cue that names it is a strong lexical and semantic cue.

At the end, every fact that is in the archive is probed twice with a dry-run recall of 10
memories: with a strong cue (its name and a vector at cosine ≈ 0.9 to it) and with a weak
one (only its topic). Reported: tier sizes by month, what was archived and deleted, and
the share of archived facts recalled on a strong and on a weak cue.

    .venv/bin/python bench/memory_year.py [--write-docs]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from report import Table, replace_section

from bionic_common.memory_types import Memory, Role, Scope, Tier
from bionic_memory.config import MemorySettings
from bionic_memory.decay import DAY, HOUR
from bionic_memory.service import MemoryService
from bionic_memory.store.edge import EdgeStore

log = logging.getLogger("memory_year")

DIM = 64
TOPICS = 24
START = 1_704_067_200.0  # 2024-01-01 00:00 UTC
SCOPE = Scope("bench", "heavy-user")
DOCS = Path(__file__).resolve().parents[1] / "docs"
SYLLABLES = ("ka", "lo", "mi", "ra", "ten", "vo", "zu", "shi", "bel", "dor", "ny", "qua")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
SMALL_TALK = (
    "haha that sounds fun",
    "ok, good to know",
    "what do you think about {t}?",
    "I was thinking about {t} again today",
    "tell me more about {t}",
    "not much going on with {t} lately",
    "sure, {t} works for me",
)
FACTS = (
    "my friend {n} loves {t}",
    "{n}'s birthday is on {d} {m}",
    "I started {t} lessons with {n}",
    "my cousin {n} moved here for {t}",
    "I prefer {t} to anything else, {n} agrees",
)


@dataclass(slots=True)
class Fact:
    name: str
    topic: int
    vector: npt.NDArray[np.float32]
    text: str
    said_on: int


@dataclass(slots=True)
class Year:
    rows: list[tuple[int, dict[Tier, int]]] = field(default_factory=list)
    archived: int = 0
    deleted_long_term: int = 0
    deleted_archive: int = 0
    probed: int = 0
    strong_hits: int = 0
    weak_hits: int = 0
    facts: int = 0


def unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return (v / np.linalg.norm(v)).astype(np.float32)


class Generator:
    """Everything random comes from one seeded generator, so every run is the same."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.topics = [unit(self.np.normal(size=DIM)) for _ in range(TOPICS)]
        self.names: set[str] = set()

    def name(self) -> str:
        while True:
            word = "".join(self.rng.choice(SYLLABLES) for _ in range(3)).capitalize()
            if word not in self.names:
                self.names.add(word)
                return word

    def near(self, direction: npt.NDArray[np.float32], spread: float) -> npt.NDArray[np.float32]:
        return unit(direction + spread * self.np.normal(size=DIM) / np.sqrt(DIM))

    def small_talk(self) -> tuple[str, npt.NDArray[np.float32]]:
        topic = self.rng.randrange(TOPICS)
        text = self.rng.choice(SMALL_TALK).format(t=f"topic {topic}")
        return f"{text} ({self.rng.randrange(10**6)})", self.near(self.topics[topic], 1.0)

    def fact(self, day: int) -> Fact:
        topic, name = self.rng.randrange(TOPICS), self.name()
        text = self.rng.choice(FACTS).format(
            n=name, t=f"topic {topic}", d=self.rng.randint(1, 28), m=self.rng.choice(MONTHS)
        )
        return Fact(name, topic, self.near(self.topics[topic], 1.0), text, day)


def run(settings: MemorySettings, days: int, per_day: int, seed: int) -> Year:
    gen = Generator(seed)
    year = Year()
    facts: list[Fact] = []
    with tempfile.TemporaryDirectory() as folder:
        store = EdgeStore(folder, DIM)
        service = MemoryService(store, settings)
        for day in range(days):
            for hour in range(per_day):
                now = START + day * DAY + (9 + hour * 12 / per_day) * HOUR
                if hour % max(per_day // 12, 1) == 0:
                    pruned = service.prune(now)
                    year.archived += pruned.archived
                    year.deleted_long_term += pruned.forgotten_long_term
                    year.deleted_archive += pruned.forgotten_archive
                roll = gen.rng.random()
                if roll < 0.15:
                    fact = gen.fact(day)
                    facts.append(fact)
                    text, vector = fact.text, fact.vector
                elif roll < 0.2 and facts:  # an earlier fact, mentioned again
                    fact = gen.rng.choice(facts[-200:])
                    text, vector = fact.text, fact.vector
                else:
                    text, vector = gen.small_talk()
                service.recall(SCOPE, text, vector.tolist(), now=now)
                reply = gen.near(vector, 0.8)
                service.remember(
                    SCOPE,
                    Role.ASSISTANT,
                    f"reply: {text}",
                    reply.tolist(),
                    now=now + 30,
                    reinforce_related=True,
                )
            if day % 30 == 29 or day == days - 1:
                counts = {s.tier: s.count for s in service.stats(SCOPE, now=now)}
                year.rows.append((day + 1, counts))
                log.info("day %d: %s", day + 1, counts)
        end = START + days * DAY
        year.facts = len(facts)
        archived = {m.text for m in archived_memories(service, end)}
        for fact in facts:
            if fact.text not in archived:
                continue
            year.probed += 1
            strong = service.recall(
                SCOPE,
                f"what about {fact.name}?",
                gen.near(fact.vector, 0.45).tolist(),
                limit=10,
                dry_run=True,
                now=end,
            )
            weak = service.recall(
                SCOPE,
                f"anything about topic {fact.topic}?",
                gen.topics[fact.topic].tolist(),
                limit=10,
                dry_run=True,
                now=end,
            )
            year.strong_hits += any(m.text == fact.text for m in strong.memories)
            year.weak_hits += any(m.text == fact.text for m in weak.memories)
        store.close()
    return year


def archived_memories(service: MemoryService, now: float) -> list[Memory]:
    memories, token = service.list_page(SCOPE, 500, "", Tier.ARCHIVE, now=now)
    while token:
        page, token = service.list_page(SCOPE, 500, token, Tier.ARCHIVE, now=now)
        memories += page
    return memories


def plot(years: dict[str, Year], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, year in years.items():
        days = [d for d, _ in year.rows]
        for tier, style in ((Tier.LONG_TERM, "-"), (Tier.ARCHIVE, ":")):
            if any(c.get(tier, 0) for _, c in year.rows):
                ax.plot(
                    days,
                    [c.get(tier, 0) for _, c in year.rows],
                    style,
                    marker=".",
                    label=f"{name}: {tier.name.lower().replace('_', '-')}",
                )
    ax.set_xlabel("day")
    ax.set_ylabel("memories")
    ax.set_title("A heavy user's year: tier sizes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def share(hits: int, probed: int) -> str:
    return f"{hits / probed:.2f}" if probed else "–"


def report(years: dict[str, Year], days: int, per_day: int) -> str:
    sizes = Table(["day", *(f"{name}: {t}" for name in years for t in ("LTM", "STM", "archive"))])
    first = next(iter(years.values()))
    for i, (day, _) in enumerate(first.rows):
        cells = [str(day)]
        for year in years.values():
            counts = year.rows[i][1]
            cells += [
                str(counts.get(t, 0)) for t in (Tier.LONG_TERM, Tier.SHORT_TERM, Tier.ARCHIVE)
            ]
        sizes.add(cells)
    outcome = Table(
        [
            "preset",
            "facts",
            "archived (moves)",
            "deleted from LTM",
            "deleted from archive",
            "archived facts probed",
            "strong cue recalled",
            "weak cue recalled",
        ]
    )
    for name, y in years.items():
        outcome.add(
            [
                name,
                str(y.facts),
                str(y.archived),
                str(y.deleted_long_term),
                str(y.deleted_archive),
                str(y.probed),
                share(y.strong_hits, y.probed),
                share(y.weak_hits, y.probed),
            ]
        )
    return "\n".join(
        [
            "## A heavy user's year (`bench/memory_year.py`)",
            "",
            f"{days} days, {per_day} user messages a day each with a reply "
            f"({2 * days * per_day} memories written), pruning every simulated hour of chat.",
            "",
            sizes.render(),
            "",
            outcome.render(),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--presets", default="default,original")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="MemorySettings override for every preset, as KEY=VALUE",
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = dict(item.split("=", 1) for item in args.set)
    years = {
        name: run(
            MemorySettings(preset=name, dimension=DIM, **overrides),  # type: ignore[arg-type]
            args.days,
            args.per_day,
            args.seed,
        )
        for name in args.presets.split(",")
    }
    text = report(years, args.days, args.per_day)
    if args.write_docs:
        plot(years, DOCS / "memory_year.png")
        replace_section(
            DOCS / "benchmarks.md",
            "memory-year",
            text + "\n\n![Tier sizes over a year](memory_year.png)",
        )
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
