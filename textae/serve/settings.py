"""What `textae serve` is configured with: one plain dataclass, checked once, passed to every worker."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from textae.errors import TextaeError

SETTINGS_ENV = "TEXTAE_SERVE_SETTINGS"  # how uvicorn's spawned workers receive the settings (JSON)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


@dataclass
class ServeSettings:
    """Options of `textae serve`: each field but `model` (the MODEL argument) is the option of the same
    name, and its trailing comment is that option's --help (tests/runtime/test_cli_runtime.py checks both)."""

    model: str  # export folder written by `textae export`
    host: str = "127.0.0.1"  # interface to listen on (0.0.0.0 to accept connections from other machines)
    port: int = 8000  # TCP port
    threads: int | None = None  # threads for onnxruntime over all workers (default: the cores this process may use)
    workers: int = 1  # server processes; each loads the model and gets threads // workers threads
    precision: str | None = None  # graphs to run: fp32 or int8 (default: the one the export chose)
    max_batch_size: int = 64  # most sentences in one onnxruntime call
    max_batch_tokens: int = 8192  # most padded tokens (rows x longest row) in one onnxruntime call
    max_wait_ms: float = 2.0  # how long the oldest queued sentence may wait for a fuller batch
    max_inputs: int = 256  # most sentences (or vectors) in one request; more is refused with 422
    max_chars: int = 10_000  # most characters in one input sentence; more is refused with 422
    max_body_bytes: int = 4 * 1024 * 1024  # largest request body; more is refused with 413
    max_queue: int = 4096  # most sentences waiting for inference over all requests; more is refused with 429
    max_decode_length: int = 256  # largest `max_length` a /decode or /reconstruct request may ask for (more: 422)
    bucket_multiple: int = 8  # batches are padded to a multiple of this many tokens (bounds distinct shapes)
    api_key_file: str | None = None  # file holding a bearer token every model route requires (401 otherwise)
    drain_seconds: float = 0.0  # after SIGTERM, keep serving with /ready at 503 this long before closing
    graceful_timeout: float = 30.0  # then wait at most this long for requests in flight

    def validate(self) -> None:
        for name in ("port", "workers", "max_batch_size", "max_batch_tokens", "max_inputs", "max_chars",
                     "max_body_bytes", "max_queue", "max_decode_length", "bucket_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TextaeError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.port > 65535:
            raise TextaeError(f"--port must be at most 65535, got {self.port}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise TextaeError(f"--threads must be a positive integer, got {self.threads!r}")
        for name in ("max_wait_ms", "drain_seconds", "graceful_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise TextaeError(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")
        if self.max_queue < self.max_inputs:
            raise TextaeError(f"--max-queue ({self.max_queue}) must hold at least one full request (--max-inputs {self.max_inputs})")
        if self.api_key_file is not None:
            read_api_key(self.api_key_file)

    @property
    def threads_per_worker(self) -> int:
        return max(1, (self.threads or available_cores()) // self.workers)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


def read_api_key(path: str) -> bytes:
    """The bearer token in `path` (surrounding whitespace dropped); the file is read, never logged."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise TextaeError(f"{path}: cannot read the API key file ({exc.strerror})") from None
    if not key:
        raise TextaeError(f"{path}: the API key file is empty")
    return key
