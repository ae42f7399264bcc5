"""Prometheus metrics of one server (prometheus-client), in the text format at GET /metrics.

With `--workers N` every worker is its own process. The CLI then points PROMETHEUS_MULTIPROC_DIR at
a fresh folder before the workers start, each worker writes its values there, and /metrics (served by
whichever worker the scrape reaches) adds up all of them, so a scrape sees the whole server.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from textae.serve.batcher import BatchStats

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

disable_created_metrics()  # the *_created series only double the output of this process-lifetime server

_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class Metrics:
    """The server's counters, gauges and histograms, in a registry of its own (one per app)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("textae_requests", "HTTP requests answered, by route and status code.", ["route", "status"], registry=r)
        self.request_seconds = Histogram(
            "textae_request_seconds", "Time from the request's arrival to its response, by route.", ["route"], buckets=_SECONDS, registry=r
        )
        self.queue_depth = Gauge(
            "textae_queue_depth", "Sentences (or vectors) waiting for the inference thread.", registry=r, multiprocess_mode="livesum"
        )
        self.batch_size = Histogram("textae_batch_size", "Rows per onnxruntime call.", buckets=_SIZES, registry=r)
        self.batch_tokens = Histogram("textae_batch_tokens", "Padded tokens (rows x padded width) per onnxruntime call.", buckets=_TOKENS, registry=r)
        self.queue_seconds = Histogram("textae_queue_seconds", "Time a sentence waited in the queue before its batch ran.", buckets=_SECONDS, registry=r)
        self.inference_seconds = Histogram("textae_inference_seconds", "Duration of one batch on the inference thread.", buckets=_SECONDS, registry=r)
        self.batch_failures = Counter("textae_batch_failures", "Batches whose onnxruntime call raised.", registry=r)
        self.truncated = Counter("textae_inputs_truncated", "Inputs cut to the model's max_length tokens.", registry=r)
        self.rejected = Counter("textae_queue_rejections", "Requests refused with 429 because the queue was full.", registry=r)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.batch_tokens.observe(stats.padded_tokens)
        self.inference_seconds.observe(stats.seconds)
        for seconds in stats.queue_seconds:
            self.queue_seconds.observe(seconds)
        if stats.failed:
            self.batch_failures.inc()

    def render(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def close(self) -> None:
        """A worker that stops removes its live gauge values (the others keep counting)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())
