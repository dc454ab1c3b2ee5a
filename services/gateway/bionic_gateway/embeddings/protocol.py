"""The OpenAI embeddings request and response."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# OpenAI's own bound on the inputs of one request.
MAX_INPUTS = 2048

Text = Annotated[str, Field(min_length=1)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"model": "all-MiniLM-L6-v2", "input": ["I love jasmine tea."]}]
        },
    )
    model: str = Field(min_length=1, description="Any name; the answer names the served model")
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        description=f"A text or a list of up to {MAX_INPUTS} texts (token arrays are not taken)"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        None, ge=1, description="Keep the first N dimensions, re-normalised (Matryoshka models)"
    )
    user: str | None = Field(None, max_length=256)
    input_type: Literal["query", "document"] = Field(
        "document",
        description="BionicMemory extension: `query` adds the model's query instruction "
        "(last-token models such as Qwen3-Embedding); documents are embedded as they are",
    )

    @field_validator("input", mode="before")
    @classmethod
    def _texts_only(cls, value: object) -> object:
        """Clear messages for what OpenAI accepts but this gateway cannot or will not."""
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError("must be a string or a list of strings (token arrays are not taken)")
        if not texts or len(texts) > MAX_INPUTS:
            raise ValueError(f"must hold 1 to at most {MAX_INPUTS} texts, got {len(texts)}")
        for i, text in enumerate(texts):
            if not text.strip():
                where = "input" if isinstance(value, str) else f"input[{i}]"
                raise ValueError(f"{where} is blank; every input needs some text")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage
