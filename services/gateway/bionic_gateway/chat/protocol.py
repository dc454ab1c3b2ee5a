"""The OpenAI chat completion request, as far as memory needs to understand it.

Unknown fields are allowed and forwarded untouched: the gateway parses to validate and
to find the user's words, but sends the client's own JSON upstream (less `bionic_memory`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bionic_gateway.errors import OpenAIError
from bionic_gateway.json_values import finite_numbers
from bionic_gateway.recall import Controls, MemoryMode

MAX_RECALL_LIMIT = 100
MODE_HEADER = "x-bionic-memory-mode"
LIMIT_HEADER = "x-bionic-recall-limit"
MODES: dict[str, MemoryMode] = {"on": "on", "read_only": "read_only", "off": "off"}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class OtherPart(BaseModel):
    """Images, audio, files…: passed through, not remembered."""

    model_config = ConfigDict(extra="allow")
    type: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str = Field(min_length=1)
    content: str | list[TextPart | OtherPart] | None = None

    @model_validator(mode="before")
    @classmethod
    def _json_numbers(cls, data: Any) -> Any:
        """Messages are sent on as parsed: NaN or Infinity would not be JSON."""
        return finite_numbers(data)

    def text(self) -> str:
        """The message's words: the string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))


class MemoryOptions(BaseModel):
    """Per-request memory controls (also as headers x-bionic-memory-mode and
    x-bionic-recall-limit; the body wins)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["on", "read_only", "off"] | None = Field(
        None, description="on: recall and store; read_only: recall only; off: no memory"
    )
    recall_limit: int | None = Field(
        None, ge=1, le=MAX_RECALL_LIMIT, description="How many memories to recall"
    )


def last_user_text(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.text()
    return ""


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "What do I like to drink?"}],
                    "user": "u1",
                },
                {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "Just between us: …"}],
                    "user": "u1",
                    "stream": True,
                    "bionic_memory": {"mode": "read_only", "recall_limit": 3},
                },
            ]
        },
    )
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    user: str | None = Field(None, max_length=256)
    bionic_memory: MemoryOptions | None = Field(
        None, description="BionicMemory's own: memory controls, never sent upstream"
    )

    @model_validator(mode="before")
    @classmethod
    def _json_numbers(cls, data: Any) -> Any:
        """The body is forwarded as parsed: NaN or Infinity must not reach the upstream."""
        return finite_numbers(data)

    def last_user_text(self) -> str:
        return last_user_text(self.messages)

    def controls(self, headers: Mapping[str, str]) -> Controls:
        """The memory controls of this request: its body field, else its headers."""
        options = self.bionic_memory or MemoryOptions()
        return Controls(
            mode=options.mode or _mode_header(headers.get(MODE_HEADER)),
            recall_limit=options.recall_limit or _limit_header(headers.get(LIMIT_HEADER)),
        )


def _mode_header(value: str | None) -> MemoryMode:
    mode = MODES.get((value or "on").strip().lower().replace("-", "_"))
    if mode is None:
        raise OpenAIError(400, f"{MODE_HEADER} must be on, read-only or off", param=MODE_HEADER)
    return mode


def _limit_header(value: str | None) -> int:
    if value is None:
        return 0
    if not value.strip().isdigit() or not 1 <= int(value) <= MAX_RECALL_LIMIT:
        raise OpenAIError(
            400, f"{LIMIT_HEADER} must be 1 to {MAX_RECALL_LIMIT}", param=LIMIT_HEADER
        )
    return int(value)
