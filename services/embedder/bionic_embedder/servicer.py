"""bionic.embedder.v1 over gRPC: converts messages and calls the batcher, nothing more."""

from __future__ import annotations

import time

import grpc

from bionic.embedder.v1 import embedder_pb2 as pb
from bionic.embedder.v1 import embedder_pb2_grpc as pb_grpc
from bionic_common.vectors import packed_f32
from bionic_embedder.batcher import Batcher, DeadlineExceeded, QueueFull
from bionic_embedder.config import EmbedderSettings
from bionic_embedder.model import EmbeddingModel

POOLING_TO_PB = {
    "mean": pb.POOLING_MEAN,
    "last_token": pb.POOLING_LAST_TOKEN,
    "cls": pb.POOLING_CLS,
}
PRECISION_TO_PB = {
    "fp32": pb.PRECISION_FP32,
    "bf16": pb.PRECISION_BF16,
    "int8": pb.PRECISION_INT8,
}


class EmbedderServicer(pb_grpc.EmbedderServiceServicer):
    def __init__(self, batcher: Batcher, model: EmbeddingModel, settings: EmbedderSettings):
        self._batcher = batcher
        self._info = pb.InfoResponse(
            model_id=model.model_id,
            dimension=model.dimension,
            max_tokens=model.max_tokens,
            pooling=POOLING_TO_PB[model.pooling],
            device=model.device,
            precision=PRECISION_TO_PB[model.precision],
            cpu_features=model.cpu_features,
            quality_min_cosine=model.quality_min_cosine,
            query_instruction=model.query_instruction or "",
        )
        self._settings = settings

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        texts = list(request.texts)
        limits = self._settings
        if not texts:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "texts must not be empty")
        if len(texts) > limits.max_texts_per_request:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {limits.max_texts_per_request} texts per request, got {len(texts)}",
            )
        for i, text in enumerate(texts):
            if not text.strip():
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"texts[{i}] is empty")
            if len(text) > limits.max_text_chars:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"texts[{i}] has {len(text)} characters; the limit is {limits.max_text_chars}",
                )
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        try:
            result = await self._batcher.embed(
                texts, query=request.kind == pb.EMBED_KIND_QUERY, deadline=deadline
            )
        except QueueFull as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except DeadlineExceeded as exc:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        reply = pb.EmbedResponse(
            prompt_tokens=result.tokens,
            dimension=result.vectors.shape[1],
            timing=pb.Timing(
                queue_us=int(result.queue_s * 1e6),
                inference_us=int(result.inference_s * 1e6),
                batch_size=result.batch_size,
            ),
        )
        if request.encoding == pb.VECTOR_ENCODING_PACKED_F32:
            reply.packed = packed_f32(result.vectors)
        else:
            reply.embeddings.extend(pb.Embedding(values=v) for v in result.vectors.tolist())
        return reply

    async def Info(
        self, request: pb.InfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.InfoResponse:
        return self._info
