"""The FastAPI app of `textae serve`: routes, error handling, timing headers, metrics, lifespan.

    app = create_app(ServeSettings(model="export/mine"))   # loads nothing yet
    # the lifespan (run by uvicorn, or by a test) loads the export, warms it up, then /ready says 200

The model is loaded in the lifespan, inside each worker process, never before a fork. Handlers
validate, then hand a typed job to the worker's Service (textae/serve/service.py), which tokenizes
and awaits the batcher (textae/serve/batcher.py); they never call onnxruntime.
"""
# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose body
# types are built per app inside create_app.

import asyncio
import base64
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
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
from textae.serve.limits import ApiError, BodyLimit, check_api_key, error_body, validation_error
from textae.serve.metrics import Metrics
from textae.serve.service import TIMING_KEY, ClientGone, Job, JobKind, Service, Timing
from textae.serve.settings import ServeSettings, read_api_key

logger = logging.getLogger("textae.serve")

SWITCH_INTERVAL_S = 0.0005  # the GIL switch interval while serving, a tenth of Python's default: why in the lifespan


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
    # Vectors go out as numpy float32 arrays written by orjson: json.dumps of float lists took a large
    # share of the event loop's time under many small requests (docs/benchmarks.md, "orjson"). orjson
    # writes float32's shortest round-trip digits, so a client that parses them as float32 gets exactly
    # the server's values.
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
        # The inference thread re-takes the GIL after every onnxruntime call; with Python's default
        # switch interval a busy event loop made it wait up to a whole interval each time, longer than
        # a small batch runs (docs/benchmarks.md, "GIL switch interval"). A shorter interval hands the
        # GIL over sooner; it is process-wide, and this process is the server.
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
        vectors, _, tokens = await service.texts_job(request, Job(JobKind.EMBED), body.input, True, "input")
        if body.encoding_format == "base64":
            encoded = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            encoded = list(vectors)
        data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
        return _json({"object": "list", "data": data, "model": service.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/embed", response_model=schemas.EmbedResponse, responses=schemas.error_responses(*model_errors), dependencies=guarded)
    async def embed(body: models.embed, request: Request) -> Response:
        """Sentence vectors (or with output "features" the encoder's features), equal to `TextAE.embed`
        of each sentence alone, whatever it is batched with."""
        service = service_of(request)
        if body.output == "features" and not service.model.has_features:
            raise ApiError(422, "this export's encoder has no features output (format version 1); re-export it", "output")
        job = Job(JobKind.EMBED, raw=body.raw, output=body.output)
        vectors, truncated, _ = await service.texts_job(request, job, body.inputs, body.truncate, "inputs")
        matrix = np.stack(vectors)
        if body.normalize:  # exactly as TextAE.embed(normalize=True)
            matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        return _json({"embeddings": matrix, "truncated": truncated})

    @app.post("/reconstruct", response_model=schemas.ReconstructResponse, responses=schemas.error_responses(*model_errors), dependencies=guarded)
    async def reconstruct(body: models.reconstruct, request: Request) -> Response:
        """What the model decodes from each sentence's vector."""
        service = service_of(request)
        job = Job(JobKind.RECONSTRUCT, body.max_length, beam_size=body.beam_size)
        texts, truncated, _ = await service.texts_job(request, job, body.inputs, body.truncate, "inputs")
        return _json({"texts": texts, "truncated": truncated})

    @app.post("/score", response_model=schemas.ScoreResponse, responses=schemas.error_responses(*model_errors), dependencies=guarded)
    async def score(body: models.score, request: Request) -> Response:
        """Anomaly scores (mean token NLL); with `threshold`, also which inputs score at or above it."""
        service = service_of(request)
        job = Job(JobKind.SCORE)
        scores, truncated, _ = await service.texts_job(request, job, body.inputs, body.truncate, "inputs")
        flagged = None if body.threshold is None else [s >= body.threshold for s in scores]
        return _json({"scores": scores, "truncated": truncated, "flagged": flagged})

    @app.post("/decode", response_model=schemas.DecodeResponse, responses=schemas.error_responses(*model_errors), dependencies=guarded)
    async def decode(body: models.decode, request: Request) -> Response:
        """Text for each vector (any point, e.g. between two sentences): greedy, or with a beam."""
        service = service_of(request)
        with np.errstate(over="ignore"):
            vectors = [np.asarray(v, dtype=np.float32) for v in body.vectors]
        for index, vector in enumerate(vectors):
            if not np.isfinite(vector).all():  # finite float64 values can overflow float32
                raise ApiError(422, "vector has values beyond float32's range", f"vectors[{index}]")
        texts = await service.run(request, Job(JobKind.DECODE, body.max_length, raw=body.raw, beam_size=body.beam_size), vectors, [1] * len(vectors))
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
                "raw_dim": model.raw_dim,
                "feature_dim": model.feature_dim if model.has_features else None,
                "feature_source": model.config.feature_source if model.has_features else None,
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


__all__ = ["app_from_environment", "create_app", "error_body"]
