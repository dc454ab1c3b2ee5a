"""The system message that carries recalled memories to the model.

The template is configurable (a string or a file, with a `{memories}` placeholder); the
defaults, in English and Chinese, keep the original system's instructions: do not invent
facts that are in neither the memories nor the conversation, and when memories disagree
trust the user's most recent statement.

With memories in the prompt the conversation can be cut short: `history_messages` keeps
only the last few client messages besides the system ones, the latest user message always,
and a tool result never without the assistant message that called the tool.
"""

from __future__ import annotations

import time
from pathlib import Path

from bionic_common.memory_types import Memory, Role
from bionic_gateway.config import GatewaySettings

TEMPLATES = {
    "en": (
        "You have a long-term memory of earlier conversations with this user. "
        "These memories were recalled for the current message, oldest first, with their "
        "time (UTC) and who said it:\n"
        "{memories}\n"
        "Use them when they help. Do not invent facts that are neither in these memories "
        "nor in the conversation. When memories disagree, trust the user's most recent "
        "statement."
    ),
    "zh": (
        "你拥有与这位用户以往对话的长期记忆。以下是为当前消息回忆起的记忆，按时间从早到晚排列，"
        "并注明时间（UTC）和说话人：\n"
        "{memories}\n"
        "在有帮助时使用这些记忆。不要编造既不在这些记忆中、也不在当前对话中的事实。"
        "记忆之间相互矛盾时，以用户最近的说法为准。"
    ),
}
INSTRUCTION_ROLES = ("system", "developer")
TOOL_RESULT_ROLES = ("tool", "function")
SPEAKERS = {
    "en": {Role.USER: "user", Role.ASSISTANT: "assistant"},
    "zh": {Role.USER: "用户", Role.ASSISTANT: "助手"},
}


class MemoryPrompt:
    """Renders recalled memories into one system message and places it in a conversation."""

    def __init__(self, template: str, language: str = "en", history_messages: int = 0) -> None:
        if "{memories}" not in template:
            raise ValueError("the memory prompt template must contain {memories}")
        self.template = template
        self.speakers = SPEAKERS[language]
        self.history_messages = history_messages

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> MemoryPrompt:
        template = settings.prompt_template
        if settings.prompt_template_file:
            template = Path(settings.prompt_template_file).read_text(encoding="utf-8")
        return cls(
            template or TEMPLATES[settings.prompt_language],
            settings.prompt_language,
            settings.history_messages,
        )

    def line(self, memory: Memory) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(memory.created_at))
        text = " ".join(memory.text.split())
        return f"- [{when}] {self.speakers[memory.role]}: {text}"

    def message(self, memories: list[Memory]) -> dict[str, object] | None:
        if not memories:
            return None
        lines = "\n".join(self.line(m) for m in memories)
        return {"role": "system", "content": self.template.replace("{memories}", lines)}

    def inject(
        self, messages: list[dict[str, object]], memories: list[Memory]
    ) -> list[dict[str, object]]:
        """The client's messages with the memory message after its leading system messages,
        and the conversation cut to `history_messages` when that is set."""
        extra = self.message(memories)
        if extra is None:
            return messages
        if self.history_messages:
            messages = recent(messages, self.history_messages)
        at = 0
        while at < len(messages) and messages[at].get("role") in INSTRUCTION_ROLES:
            at += 1
        return [*messages[:at], extra, *messages[at:]]


def recent(messages: list[dict[str, object]], keep: int) -> list[dict[str, object]]:
    """The system messages and the last `keep` others, reaching back further for the latest
    user message and for the call of a tool result at the cut."""
    talk = [i for i, m in enumerate(messages) if m.get("role") not in INSTRUCTION_ROLES]
    start = max(len(talk) - keep, 0)
    users = [n for n, i in enumerate(talk) if messages[i].get("role") == "user"]
    if users:
        start = min(start, users[-1])
    while start > 0 and messages[talk[start]].get("role") in TOOL_RESULT_ROLES:
        start -= 1
    dropped = set(talk[:start])
    return [m for i, m in enumerate(messages) if i not in dropped]
