"""Embeddings in the OpenAI format from the embedder replicas."""

from __future__ import annotations

import asyncio
import base64
import logging

import grpc
import numpy as np

from bionic_common.clients import EmbedderClient, EmbedderInfo
from bionic_gateway.embeddings.protocol import (
    EmbeddingObject,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from bionic_gateway.errors import OpenAIError

log = logging.getLogger(__name__)

# Texts per embedder call: a long input is sent as concurrent calls, which the channel
# spreads over the replicas (round robin) and each replica merges into its own batches.
CHUNK = 256
EMBEDDER_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class EmbeddingsService:
    def __init__(self, embedder: EmbedderClient, timeout: float) -> None:
        self._embedder = embedder
        self._timeout = timeout
        self._info: EmbedderInfo | None = None  # every replica serves the same model

    async def create(self, request: EmbeddingRequest) -> EmbeddingResponse:
        texts = request.texts()
        try:
            info = await self._model_info()
            if request.dimensions is not None and request.dimensions > info.dimension:
                raise OpenAIError(
                    400,
                    f"dimensions must be at most {info.dimension} for {info.model_id}",
                    param="dimensions",
                )
            parts = await asyncio.gather(
                *(
                    self._embedder.embed(
                        texts[i : i + CHUNK], request.input_type, timeout=self._timeout
                    )
                    for i in range(0, len(texts), CHUNK)
                )
            )
        except grpc.aio.AioRpcError as exc:
            raise _as_openai_error(exc) from exc
        vectors = np.array([v for part in parts for v in part.vectors], dtype=np.float32)
        if request.dimensions is not None and request.dimensions < info.dimension:
            vectors = vectors[:, : request.dimensions]
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        tokens = sum(part.tokens for part in parts)
        return EmbeddingResponse(
            data=[
                EmbeddingObject(index=i, embedding=_encode(v, request.encoding_format))
                for i, v in enumerate(vectors)
            ],
            model=info.model_id,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def _model_info(self) -> EmbedderInfo:
        if self._info is None:
            self._info = await self._embedder.info(timeout=self._timeout)
        return self._info


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = vector.tolist()
    return values


def _as_openai_error(exc: grpc.aio.AioRpcError) -> OpenAIError:
    status = EMBEDDER_STATUS.get(exc.code(), 503)
    if status == 503:
        log.warning("embeddings: the embedder is unavailable (%s)", exc.code().name)
        message = "the embedder is unavailable, try again"
    else:
        message = exc.details() or exc.code().name.lower()
    return OpenAIError(status, message, code=exc.code().name.lower())
