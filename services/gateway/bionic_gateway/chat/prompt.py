"""The system message that carries recalled memories to the model.

The template is configurable (a string or a file, with a `{memories}` placeholder); the
defaults, in English and Chinese, keep the original system's instructions: do not invent
facts that are in neither the memories nor the conversation, and when memories disagree
trust the user's most recent statement.
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
SPEAKERS = {
    "en": {Role.USER: "user", Role.ASSISTANT: "assistant"},
    "zh": {Role.USER: "用户", Role.ASSISTANT: "助手"},
}


class MemoryPrompt:
    """Renders recalled memories into one system message and places it in a conversation."""

    def __init__(self, template: str, language: str = "en") -> None:
        if "{memories}" not in template:
            raise ValueError("the memory prompt template must contain {memories}")
        self.template = template
        self.speakers = SPEAKERS[language]

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> MemoryPrompt:
        template = settings.prompt_template
        if settings.prompt_template_file:
            template = Path(settings.prompt_template_file).read_text(encoding="utf-8")
        return cls(template or TEMPLATES[settings.prompt_language], settings.prompt_language)

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
        """The client's messages with the memory message after its leading system messages."""
        extra = self.message(memories)
        if extra is None:
            return messages
        at = 0
        while at < len(messages) and messages[at].get("role") in ("system", "developer"):
            at += 1
        return [*messages[:at], extra, *messages[at:]]
