"""Salience of a message from its text, on constructed cases."""

from __future__ import annotations

import pytest

from bionic_memory.salience import CUES, initial_strength, salience


@pytest.mark.parametrize(
    ("text", "cues"),
    [
        ("haha sounds great!", set()),
        ("My birthday is on 8 May", {"date", "number"}),
        ("I really love jasmine tea", {"preference"}),
        ("my sister just got a dog", {"relationship"}),
        ("I work at a bakery now", {"identity"}),
        ("We went hiking with Joanna", {"name"}),
        (
            "I moved to Lisbon with my wife in 2021 and I love it",
            set(CUES) - {"number"} | {"number"},
        ),
    ],
)
def test_each_cue_family_is_recognised(text: str, cues: set[str]) -> None:
    found = {name for name, pattern in CUES.items() if pattern.search(text)}
    assert found == cues
    assert salience(text) == pytest.approx(len(cues) / len(CUES))


def test_a_sentence_opening_capital_is_not_a_name() -> None:
    assert salience("Sounds good. Thanks a lot") == 0.0


def test_initial_strength_is_one_plus_gain_times_salience() -> None:
    assert initial_strength("ok", 2.0) == 1.0
    assert initial_strength("I love my mom", 0.0) == 1.0
    text = "I love my mom"
    assert initial_strength(text, 1.5) == pytest.approx(1 + 1.5 * salience(text))
