"""The FastAPI app of `textae serve`: routes, error handling, timing headers, metrics, lifespan.

    app = create_app(ServeSettings(model="export/mine"))   # loads nothing yet
    # the lifespan (run by uvicorn, or by a test) loads the export, warms it up, then /ready says 200

The model is loaded in the lifespan, inside each worker process, never before a fork. Handlers
validate and tokenize, then await the batcher (textae/serve/batcher.py); they never call onnxruntime.
"""
# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose body
# types are built per app inside create_app.

import asyncio
import base64
import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import textae
from textae.runtime.model import TextAE
from textae.serve import schemas
from textae.serve.batcher import Batch, Batcher, BatchStats, InferenceFailed, QueueClosed, QueueFull
from textae.serve.limits import ApiError, BodyLimit, check_api_key, error_body, validation_error
from textae.serve.metrics import Metrics
from textae.serve.settings import ServeSettings, read_api_key

logger = logging.getLogger("textae.serve")

TIMING_KEY = "textae.timing"
SWITCH_INTERVAL_S = 0.0005
INLINE_TOKENIZE_CHARS = 4096  # tokenize smaller requests on the event loop; larger ones in a thread


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
        kind = batch.key[0]
        if kind == "embed":
            return list(self.model.embed_ids(batch.payloads, width=batch.width))
        if kind == "score":
            return [float(score) for score in self.model.score_ids(batch.payloads, width=batch.width)]
        max_length = batch.key[1]
        if kind == "reconstruct":
            vectors = self.model.embed_ids(batch.payloads, width=batch.width)
        else:
            vectors = np.stack(batch.payloads)
        return self.model.decode(vectors, batch_size=len(vectors), max_length=max_length)

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

    async def run(self, request: Request, key: tuple, payloads: list[Any], lengths: list[int], expected: bool = False) -> list[Any]:
        """Queue the items, await their results; drop them if the client disconnects meanwhile."""
        timing: Timing = request.scope[TIMING_KEY]
        try:
            ticket = self.batcher.submit(key, payloads, lengths, expected=expected)
        except QueueFull:
            self.metrics.rejected.inc()
            raise ApiError(429, "the server is at capacity; retry later", headers={"Retry-After": str(self.retry_after())}) from None
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
        self, request: Request, kind: tuple, inputs: Any, truncate: bool, field: str
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
                    raise ApiError(422, f"input has more than the model's {self.model.config.max_length} tokens and truncate is false", where)
                self.metrics.truncated.inc(sum(truncated))
        except BaseException:
            self.batcher.abandon()
            raise
        results = await self.run(request, kind, token_ids, [len(ids) for ids in token_ids], expected=True)
        return results, truncated, sum(len(ids) for ids in token_ids)

    async def warm_up(self) -> None:
        """One call of every kind through the batcher, and the largest batch shape the caps allow,
        so the first user request is not slow and onnxruntime's memory reaches its peak now."""
        limit = self.model.config.max_length
        (ids,), _ = self.model.tokenize_with_truncation(["warm up the model."])
        long_ids = (ids * (limit // max(1, len(ids)) + 1))[:limit]
        rows = max(1, min(self.settings.max_batch_size, self.settings.max_queue, self.settings.max_batch_tokens // self.batcher.width_for(limit)))
        for key, payloads in (
            (("embed",), [ids] + [long_ids] * (rows - 1)),
            (("score",), [ids] + [long_ids] * (rows - 1)),
            (("reconstruct", None), [ids]),
        ):
            ticket = self.batcher.submit(key, payloads, [len(p) for p in payloads])
            await ticket.future


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ServiceMiddleware:
    """Outermost: x-*-time headers on every response, and request counts by route and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        timing = scope[TIMING_KEY] = Timing()
        status = 500  # if the app raises before answering, the error middleware answers 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-tokenization-time"] = f"{timing.tokenization:.3f}"
                headers["x-queue-time"] = f"{timing.queue:.3f}"
                headers["x-inference-time"] = f"{timing.inference:.3f}"
            await send(message)

        route = scope["path"] if scope["path"] in self.routes else "other"  # bounded label values
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _json(payload: dict[str, Any]) -> Response:
    # Vectors go out as numpy float32 arrays written by orjson: json.dumps of a 256-float list took
    # 0.37 ms, a quarter of the event loop's time at 16 one-sentence clients, where orjson takes
    # 0.01 ms. orjson writes float32's shortest round-trip digits, so a client that parses them as
    # float32 gets exactly the server's values.
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def create_app(settings: ServeSettings, *, handle_signals: bool = False) -> FastAPI:
    """The ASGI app for `settings`; its lifespan loads the model. handle_signals: SIGTERM turns
    /ready to 503 (then, after --drain-seconds, uvicorn's own graceful shutdown runs)."""
    settings.validate()
    api_key = read_api_key(settings.api_key_file) if settings.api_key_file else None
    # the manifest is small: read it now (without hashing the graphs) so the spec knows the widths
    from textae.manifest import Manifest

    config = Manifest.load(Path(settings.model), verify_files=False).model
    models = schemas.request_models(schemas.Limits(settings.max_inputs, settings.max_chars, config.latent_dim, settings.max_decode_length))
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = await asyncio.to_thread(TextAE.load, settings.model, settings.threads_per_worker, settings.precision)
        # The inference thread re-takes the GIL after every onnxruntime call; with Python's default 5 ms
        # switch interval a busy event loop made it wait up to 5 ms each time (batches of 6 took 12 ms
        # instead of 2). A shorter interval hands the GIL over sooner; it is process-wide, and this
        # process is the server.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        service = Service(settings, model, metrics)
        app.state.service = service
        service.batcher.start()
        try:
            await service.warm_up()
            service.ready = True
            if handle_signals:
                _drain_on_sigterm(service, settings.drain_seconds)
            logger.info("textae serve: %s (%s) ready, %d threads", service.name, model.precision, settings.threads_per_worker)
            yield
        finally:
            service.draining = True
            service.ready = False
            await asyncio.to_thread(service.batcher.close, settings.graceful_timeout)
            metrics.close()

    app = FastAPI(
        title="textae serve",
        version=textae.__version__,
        description="Sentence vectors, reconstructions, anomaly scores and decoding from a textae export, "
        "with dynamic batching. Every response carries x-queue-time, x-inference-time and x-tokenization-time "
        "headers (milliseconds). Errors have the OpenAI shape `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.",
        lifespan=lifespan,
    )

    bearer = HTTPBearer(auto_error=False, description="The token in --api-key-file.")

    async def require_api_key(request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        if api_key is not None:
            check_api_key(request.headers.get("authorization"), api_key)

    guarded = [Depends(require_api_key)] if api_key is not None else []
    model_errors = (401, 413, 422, 429, 500, 503) if api_key is not None else (413, 422, 429, 500, 503)

    def service_of(request: Request) -> Service:
        service: Service | None = getattr(request.app.state, "service", None)
        if service is None or not service.batcher.alive:
            raise ApiError(503, "the model is not loaded")
        return service

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error_response(validation_error(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400:  # FastAPI's "error parsing the body", e.g. bytes that are not UTF-8
            return _error_response(ApiError(422, "the body is not valid UTF-8 JSON", "body"))
        return _error_response(ApiError(error.status_code, str(error.detail), headers=dict(error.headers or {})))

    @app.exception_handler(ClientGone)
    async def on_client_gone(request: Request, error: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it, metrics count it

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return _error_response(ApiError(500, f"internal error ({type(error).__name__})"))

    # --- routes -------------------------------------------------------------------------------

    @app.post(
        "/v1/embeddings",
        response_model=schemas.OpenAIEmbeddingsResponse,
        responses=schemas.error_responses(*model_errors),
        dependencies=guarded,
        tags=["OpenAI"],
    )
    async def openai_embeddings(body: models.openai_embeddings, request: Request) -> Response:
        """Sentence vectors in the OpenAI embeddings shape; the official `openai` client works unchanged."""
        service = service_of(request)
        if body.dimensions is not None and body.dimensions != service.model.dim:
            raise ApiError(422, f"this model's vectors have {service.model.dim} dimensions", "dimensions")
        vectors, _, tokens = await service.texts_job(request, ("embed",), body.input, True, "input")
        if body.encoding_format == "base64":
            encoded = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            encoded = list(vectors)
        data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
        return _json({"object": "list", "data": data, "model": service.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/embed", response_model=schemas.EmbedResponse, responses=schemas.error_responses(*model_errors), dependencies=guarded)
    async def embed(body: models.embed, request: Request) -> Response:
        """Sentence vectors, equal to `TextAE.embed` of each sentence alone, whatever it is batched with."""
        service = service_of(request)
        vectors, truncated, _ = await service.texts_job(request, ("embed",), body.inputs, body.truncate, "inputs")
        matrix = np.stack(vectors)
        if body.normalize:  # exactly as TextAE.embed(normalize=True)
            matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        return _json({"embeddings": matrix, "truncated": truncated})

    @app.post("/reconstruct", response_model=schemas.ReconstructResponse, responses=schemas.error_responses(*model_errors), dependencies=guarded)
    async def reconstruct(body: models.reconstruct, request: Request) -> Response:
        """What the model decodes from each sentence's vector."""
        service = service_of(request)
        texts, truncated, _ = await service.texts_job(request, ("reconstruct", body.max_length), body.inputs, body.truncate, "inputs")
        return _json({"texts": texts, "truncated": truncated})

    @app.post("/score", response_model=schemas.ScoreResponse, responses=schemas.error_responses(*model_errors), dependencies=guarded)
    async def score(body: models.score, request: Request) -> Response:
        """Anomaly scores (mean token NLL); with `threshold`, also which inputs score at or above it."""
        service = service_of(request)
        scores, truncated, _ = await service.texts_job(request, ("score",), body.inputs, body.truncate, "inputs")
        flagged = None if body.threshold is None else [s >= body.threshold for s in scores]
        return _json({"scores": scores, "truncated": truncated, "flagged": flagged})

    @app.post("/decode", response_model=schemas.DecodeResponse, responses=schemas.error_responses(*model_errors), dependencies=guarded)
    async def decode(body: models.decode, request: Request) -> Response:
        """Greedy text for each vector (any point, e.g. between two sentences)."""
        service = service_of(request)
        with np.errstate(over="ignore"):
            vectors = [np.asarray(v, dtype=np.float32) for v in body.vectors]
        for index, vector in enumerate(vectors):
            if not np.isfinite(vector).all():  # finite float64 values can overflow float32
                raise ApiError(422, "vector has values beyond float32's range", f"vectors[{index}]")
        texts = await service.run(request, ("decode", body.max_length), vectors, [1] * len(vectors))
        return _json({"texts": texts})

    @app.get("/health", response_model=schemas.StatusResponse, responses=schemas.error_responses(503))
    async def health(request: Request) -> Response:
        """Alive: the process answers and its inference thread runs (also while warming up)."""
        service = getattr(request.app.state, "service", None)
        if service is not None and not service.batcher.alive and not service.draining:
            raise ApiError(503, "the inference thread has stopped")
        return _json({"status": "alive"})

    @app.get("/ready", response_model=schemas.StatusResponse, responses=schemas.error_responses(503))
    async def ready(request: Request) -> Response:
        """200 once warm-up has succeeded; 503 before, and from SIGTERM on (take this worker out of rotation)."""
        service = getattr(request.app.state, "service", None)
        if service is None or not service.ready:
            raise ApiError(503, "warming up")
        if service.draining:
            raise ApiError(503, "shutting down")
        return _json({"status": "ready"})

    @app.get("/info", response_model=schemas.InfoResponse, responses=schemas.error_responses(*[c for c in model_errors if c in (401, 503)]), dependencies=guarded)
    async def info(request: Request) -> Response:
        """The served model, its precision and width, and the limits requests must keep."""
        service = service_of(request)
        s, model = service.settings, service.model
        limits = {name: getattr(s, name) for name in schemas.InfoLimits.model_fields}
        return _json(
            {
                "model": service.name,
                "precision": model.precision,
                "dim": model.dim,
                "max_length": model.config.max_length,
                "textae_version": textae.__version__,
                "threads": s.threads_per_worker,
                "workers": s.workers,
                "limits": limits,
            }
        )

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
    async def prometheus_metrics() -> Response:
        """Prometheus metrics: requests by route and status, queue depth, batch sizes and tokens, queue and inference times."""
        return Response(metrics.render(), media_type=metrics.content_type)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ServiceMiddleware, metrics=metrics, routes={route.path for route in app.routes})
    return app


def _drain_on_sigterm(service: Service, delay: float) -> None:
    """Chain onto uvicorn's SIGTERM handler: /ready turns 503 at once, uvicorn's graceful shutdown
    (stop accepting, finish requests in flight) starts after `delay` seconds."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        already = service.draining
        service.draining = True
        if delay > 0 and not already:
            timer = threading.Timer(delay, previous, args=(signum, frame))
            timer.daemon = True
            timer.start()
        else:
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def app_from_environment() -> FastAPI:
    """uvicorn's factory for `--workers N`: each spawned worker rebuilds the app from the settings."""
    import os

    from textae.serve.settings import SETTINGS_ENV

    return create_app(ServeSettings.from_json(os.environ[SETTINGS_ENV]), handle_signals=True)


__all__ = ["Service", "app_from_environment", "create_app", "error_body"]
