"""The system message that carries recalled memories to the model."""

from __future__ import annotations

import datetime as dt

from bionic_common.memory_types import Memory

MEMORY_PROMPT = (
    "You have a long-term memory of earlier conversations with this user. "
    "These memories were recalled for the current message, oldest first, with their time "
    "(UTC) and who said it:\n"
    "{memories}\n"
    "Use them when they help. Do not invent facts that are neither in these memories nor "
    "in the conversation. When memories disagree, trust the user's most recent statement."
)


def memory_line(memory: Memory) -> str:
    when = dt.datetime.fromtimestamp(memory.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M")
    text = " ".join(memory.text.split())
    return f"- [{when}] {memory.role.value}: {text}"


def memory_message(memories: list[Memory]) -> dict[str, object] | None:
    if not memories:
        return None
    lines = "\n".join(memory_line(m) for m in memories)
    return {"role": "system", "content": MEMORY_PROMPT.format(memories=lines)}


def inject(messages: list[dict[str, object]], memories: list[Memory]) -> list[dict[str, object]]:
    """The client's messages with the memory message after its leading system messages."""
    extra = memory_message(memories)
    if extra is None:
        return messages
    at = 0
    while at < len(messages) and messages[at].get("role") in ("system", "developer"):
        at += 1
    return [*messages[:at], extra, *messages[at:]]
