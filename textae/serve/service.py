"""One worker's batching core, between the routes (textae/serve/app.py) and the inference thread
(textae/serve/batcher.py): the model, its batcher and metrics, and the jobs a request can ask for.

    service = Service(settings, model, metrics)
    service.batcher.start()
    await service.warm_up()
    vectors, truncated, tokens = await service.texts_job(request, Job(JobKind.EMBED), ["a sentence."], True, "inputs")

Handlers tokenize here on the event loop (or in a thread, for large requests) and await the batcher;
only the batcher's thread calls onnxruntime, through `Service._run_batch`.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.types import Receive

from textae.runtime.model import TextAE
from textae.serve.batcher import Batch, Batcher, BatchStats, InferenceFailed, QueueClosed, QueueFull
from textae.serve.limits import ApiError
from textae.serve.metrics import Metrics
from textae.serve.settings import ServeSettings

TIMING_KEY = "textae.timing"  # where a request's Timing sits in its ASGI scope
INLINE_TOKENIZE_CHARS = 4096  # tokenize smaller requests on the event loop; larger ones in a thread


class JobKind(enum.Enum):
    """What the model computes for a batch."""

    EMBED = "embed"  # token ids -> sentence vectors
    SCORE = "score"  # token ids -> anomaly scores (mean token negative log-likelihood)
    RECONSTRUCT = "reconstruct"  # token ids -> their vectors -> text (greedy, or a beam)
    DECODE = "decode"  # vectors -> text (greedy, or a beam)


@dataclass(frozen=True)
class Job:
    """One request's job: the batcher's key, so only items of equal jobs share a batch."""

    kind: JobKind
    max_length: int | None = None  # RECONSTRUCT and DECODE: most tokens to generate (None: the model's default)
    raw: bool = False  # EMBED: the encoder's raw vectors, without the export's stored whitening; DECODE: the vectors are raw
    output: str = "sentence_embedding"  # EMBED: the encoder output to return (sentence_embedding or features)
    beam_size: int = 1  # RECONSTRUCT and DECODE: hypotheses kept per text (1: greedy)


@dataclass
class Timing:
    """Per request: what the x-*-time headers report (milliseconds)."""

    tokenization: float = 0.0
    queue: float = 0.0
    inference: float = 0.0


class ClientGone(Exception):
    """The client disconnected while its request waited; its queued items were dropped."""


class Service:
    """One worker's model, batcher and metrics, and whether it is ready."""

    def __init__(self, settings: ServeSettings, model: TextAE, metrics: Metrics) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.name = Path(settings.model).resolve().name
        self.ready = False
        self.draining = False
        self._items_per_second = 0.0
        self.batcher = Batcher(
            self._run_batch,
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            max_length=model.config.max_length,
            bucket_multiple=settings.bucket_multiple,
            on_batch=self._observe_batch,
            on_depth=metrics.queue_depth.set,
        )

    # --- inference thread ---------------------------------------------------------------------

    def _run_batch(self, batch: Batch) -> Sequence[Any]:
        job: Job = batch.key  # type: ignore[assignment]  # the batcher hands back the key it was given
        if job.kind is JobKind.EMBED:
            return list(self.model.embed_ids(batch.payloads, width=batch.width, raw=job.raw, output=job.output))
        if job.kind is JobKind.SCORE:
            return [float(score) for score in self.model.score_ids(batch.payloads, width=batch.width)]
        if job.kind is JobKind.RECONSTRUCT:
            vectors = self.model.embed_ids(batch.payloads, width=batch.width, raw=True)  # the decoder reads raw vectors
            return self.model.decode(vectors, batch_size=len(vectors), max_length=job.max_length, raw=True, beam_size=job.beam_size)
        # JobKind.DECODE: the payloads are the vectors, as /embed returns them (raw: as with raw)
        vectors = np.stack(batch.payloads)
        return self.model.decode(vectors, batch_size=len(vectors), max_length=job.max_length, raw=job.raw, beam_size=job.beam_size)

    def _observe_batch(self, stats: BatchStats) -> None:
        self.metrics.observe_batch(stats)
        if stats.seconds > 0:
            rate = stats.size / stats.seconds
            self._items_per_second = rate if not self._items_per_second else 0.9 * self._items_per_second + 0.1 * rate

    # --- event loop ---------------------------------------------------------------------------

    async def tokenize(self, texts: list[str], timing: Timing) -> tuple[list[list[int]], list[bool]]:
        started = time.perf_counter()
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            result = self.model.tokenize_with_truncation(texts)
        else:
            result = await asyncio.to_thread(self.model.tokenize_with_truncation, texts)
        timing.tokenization += (time.perf_counter() - started) * 1000
        return result

    async def run(
        self, request: Request, job: Job, payloads: list[Any], lengths: list[int], expected: bool = False
    ) -> list[Any]:
        """Queue the items, await their results; drop them if the client disconnects meanwhile."""
        timing: Timing = request.scope[TIMING_KEY]
        try:
            ticket = self.batcher.submit(job, payloads, lengths, expected=expected)
        except QueueFull:
            self.metrics.rejected.inc()
            retry = {"Retry-After": str(self.retry_after())}
            raise ApiError(429, "the server is at capacity; retry later", headers=retry) from None
        except QueueClosed:
            raise ApiError(503, "the server is shutting down") from None
        disconnected = asyncio.ensure_future(_wait_for_disconnect(request.receive))
        try:
            done, _ = await asyncio.wait({ticket.future, disconnected}, return_when=asyncio.FIRST_COMPLETED)
            if ticket.future not in done:
                raise ClientGone()
            return ticket.future.result()
        except InferenceFailed as exc:
            raise ApiError(500, f"inference failed ({exc}); the server keeps serving") from None
        finally:
            disconnected.cancel()
            if not ticket.future.done():
                self.batcher.cancel(ticket)
                ticket.future.cancel()
            timing.queue += ticket.queue_seconds * 1000
            timing.inference += ticket.inference_seconds * 1000

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained, from the recent throughput (1 to 60)."""
        if self._items_per_second <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self.batcher.depth / self._items_per_second))))

    async def texts_job(
        self, request: Request, job: Job, inputs: Any, truncate: bool, field: str
    ) -> tuple[list[Any], list[bool], int]:
        """Tokenize, refuse or report truncation, run: (results, truncated, tokens read)."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        self.batcher.expect()  # a batch forming now may wait (up to max_wait_ms) for these sentences
        try:
            token_ids, truncated = await self.tokenize(texts, request.scope[TIMING_KEY])
            if any(truncated):
                if not truncate:
                    index = truncated.index(True)
                    where = field if isinstance(inputs, str) else f"{field}[{index}]"
                    limit = self.model.config.max_length
                    raise ApiError(422, f"input has more than the model's {limit} tokens and truncate is false", where)
                self.metrics.truncated.inc(sum(truncated))
        except BaseException:
            self.batcher.abandon()
            raise
        results = await self.run(request, job, token_ids, [len(ids) for ids in token_ids], expected=True)
        return results, truncated, sum(len(ids) for ids in token_ids)

    async def warm_up(self) -> None:
        """One call of every kind through the batcher, and the largest batch shape the caps allow,
        so the first user request is not slow and onnxruntime's memory reaches its peak now."""
        limit = self.model.config.max_length
        (ids,), _ = self.model.tokenize_with_truncation(["warm up the model."])
        long_ids = (ids * (limit // max(1, len(ids)) + 1))[:limit]
        settings = self.settings
        widest = settings.max_batch_tokens // self.batcher.width_for(limit)
        rows = max(1, min(settings.max_batch_size, settings.max_queue, widest))
        for job, payloads in (
            (Job(JobKind.EMBED), [ids] + [long_ids] * (rows - 1)),
            (Job(JobKind.SCORE), [ids] + [long_ids] * (rows - 1)),
            (Job(JobKind.RECONSTRUCT), [ids]),
        ):
            ticket = self.batcher.submit(job, payloads, [len(p) for p in payloads])
            await ticket.future


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


