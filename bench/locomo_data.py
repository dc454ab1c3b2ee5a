"""LoCoMo-10 with the audit overlay of corrected evidence labels, as plain records.

Timestamps: each session starts at its own `session_<n>_date_time` (read as UTC) and its
turns follow `TURN_GAP` seconds apart. Evidence ids are normalised (`"D8:6; D9:17"`,
`"D:11:26"`, `"D30:05"`) and ids that name no turn are dropped and counted.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo"
TURN_GAP = 30.0
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
_ID = re.compile(r"D:?(\d+):0*(\d+)")


@dataclass(frozen=True, slots=True)
class Turn:
    dia_id: str
    speaker: str
    text: str  # what is stored and embedded
    session: int
    index: int  # position within its session
    time: float


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    gold: frozenset[str]
    category: int


@dataclass(slots=True)
class Conversation:
    sample_id: str
    speaker_a: str
    speaker_b: str
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


@dataclass(slots=True)
class Dataset:
    conversations: list[Conversation]
    relabelled: int  # questions whose evidence the audit corrected
    dropped_ids: int  # evidence ids naming no turn
    skipped: int  # questions without any evidence


def parse_time(text: str) -> float:
    """'1:56 pm on 8 May, 2023' as Unix seconds (UTC)."""
    when = dt.datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")
    return when.replace(tzinfo=dt.UTC).timestamp()


def normalise_ids(raw: list[str]) -> list[str]:
    return [f"D{s}:{t}" for item in raw for s, t in _ID.findall(str(item))]


def turn_text(speaker: str, turn: dict[str, str]) -> str:
    text = f'{speaker} said, "{turn["text"]}"'
    if turn.get("blip_caption"):
        text += f" [shares {turn['blip_caption']}]"
    return text


def load(data_dir: Path = DATA_DIR) -> Dataset:
    raw = json.loads((data_dir / "locomo10.json").read_text())
    audit = json.loads((data_dir / "locomo_audit_errors.json").read_text())
    corrected: dict[tuple[int, str], list[str]] = {}
    for entry in audit:
        if entry["error_type"] == "WRONG_CITATION":
            conv = int(entry["question_id"].split("_")[1])
            corrected[(conv, entry["question"])] = entry["correct_evidence"]
    dataset = Dataset(conversations=[], relabelled=0, dropped_ids=0, skipped=0)
    for number, sample in enumerate(raw):
        body = sample["conversation"]
        conv = Conversation(sample["sample_id"], body["speaker_a"], body["speaker_b"])
        sessions = sorted(
            int(key.split("_")[1])
            for key in body
            if key.startswith("session_") and not key.endswith("date_time")
        )
        for session in sessions:
            start = parse_time(body[f"session_{session}_date_time"])
            for index, turn in enumerate(body[f"session_{session}"]):
                conv.turns.append(
                    Turn(
                        dia_id=turn["dia_id"],
                        speaker=turn["speaker"],
                        text=turn_text(turn["speaker"], turn),
                        session=session,
                        index=index,
                        time=start + index * TURN_GAP,
                    )
                )
        known = {t.dia_id for t in conv.turns}
        for qa in sample["qa"]:
            evidence = qa.get("evidence", [])
            fix = corrected.pop((number, qa["question"]), None)
            if fix is not None:
                evidence = fix
                dataset.relabelled += 1
            ids = normalise_ids(evidence)
            gold = frozenset(i for i in ids if i in known)
            dataset.dropped_ids += len(set(ids)) - len(gold)
            if not gold:
                dataset.skipped += 1
                continue
            conv.questions.append(Question(qa["question"], gold, int(qa["category"])))
        dataset.conversations.append(conv)
    if corrected:
        raise ValueError(f"audit entries matching no question: {sorted(corrected)}")
    return dataset
