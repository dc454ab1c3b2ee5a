"""How much a message is worth remembering, from its text alone (no LLM on the write path).

Facts about a person last: names, dates, numbers, places, preferences, relationships,
plans and identity statements. Small talk ("haha, sounds great!") does not. The score is
the share of these cue families a message shows, in [0, 1]; a memory's initial strength is
`1 + gain * salience`, so under a multi-exponential curve a salient memory lives longer
by a bounded amount.
"""

from __future__ import annotations

import re

_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_WEEKDAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"

CUES: dict[str, re.Pattern[str]] = {
    # Dates and times: "8 May", "in 2022", "last Tuesday", "next week", "my birthday".
    "date": re.compile(
        rf"\b(?:(?:{_MONTHS})\b\.?\s*\d{{0,2}}|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})"
        rf"|(?:19|20)\d\d|{_WEEKDAYS}|yesterday|tomorrow|tonight|last (?:week|month|year)"
        r"|next (?:week|month|year)|birthday|anniversary|wedding|graduat\w*)\b",
        re.IGNORECASE,
    ),
    # Numbers and quantities: ages, prices, counts.
    "number": re.compile(r"\b\d+(?:[.,]\d+)?\b|\$\d"),
    # Preferences and feelings about things.
    "preference": re.compile(
        r"\b(?:i|we)\s+(?:really\s+|absolutely\s+)?(?:love|like|hate|prefer|enjoy|adore|"
        r"can't stand|dislike)\b|\bmy fav(?:ou?rite)?\b|\ballergic\b",
        re.IGNORECASE,
    ),
    # Relationships: "my wife", "her brother", "our kids".
    "relationship": re.compile(
        r"\b(?:my|our|his|her)\s+(?:\w+\s+)?(?:wife|husband|partner|boyfriend|girlfriend|"
        r"son|daughter|kids?|children|mom|mother|dad|father|parents?|brother|sister|"
        r"grand\w+|aunt|uncle|cousin|friend|best friend|boss|colleague|dog|cat|pet)s?\b",
        re.IGNORECASE,
    ),
    # Identity, home, work, plans and life events.
    "identity": re.compile(
        r"\b(?:my name is|i am a|i'm a|i work|i live|i moved|i was born|i grew up|"
        r"i(?:'m| am) (?:going|planning) to|i(?:'ve| have) (?:decided|started|joined|adopted)|"
        r"i got (?:a|my|married|engaged|promoted)|i signed up|i bought)\b",
        re.IGNORECASE,
    ),
    # Proper names: a capitalised word that does not open a sentence and is no month or day.
    "name": re.compile(
        rf"(?<![.!?]\s)(?<!^)(?<![\"'(])\b(?!(?i:{_MONTHS}|{_WEEKDAYS})\b)[A-Z][a-z]{{2,}}\b",
    ),
}


def salience(text: str) -> float:
    """The share of cue families (dates, numbers, preferences, relationships, identity,
    names) that `text` shows, in [0, 1]."""
    return sum(1 for pattern in CUES.values() if pattern.search(text)) / len(CUES)


def initial_strength(text: str, gain: float) -> float:
    """The strength a new memory starts with: 1 for small talk, up to 1 + gain."""
    return 1.0 + gain * salience(text)
