"""Start uvicorn for `textae serve`: check everything that can be checked before any worker starts."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from typing import Any

from textae.errors import TextaeError
from textae.manifest import Manifest
from textae.serve.settings import SETTINGS_ENV, ServeSettings


def check_serve(settings: ServeSettings) -> None:
    """Raise TextaeError (one line) for bad options or a bad model folder: sizes and sha256 of every file."""
    settings.validate()
    manifest = Manifest.load(settings.model)
    precisions = manifest.precisions
    if settings.precision is not None and settings.precision not in precisions:
        raise TextaeError(f"{settings.model}: precision {settings.precision!r} not available; this export has {', '.join(precisions)}")
    max_length = manifest.model.max_length
    if settings.max_batch_tokens < min(max_length, settings.bucket_multiple):
        raise TextaeError(f"--max-batch-tokens {settings.max_batch_tokens} cannot hold one input of up to {max_length} tokens")


def serve(settings: ServeSettings, log_level: str = "info") -> None:
    """Run the server until SIGTERM or Ctrl-C; a graceful stop returns normally (exit status 0)."""
    check_serve(settings)
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "timeout_graceful_shutdown": int(settings.graceful_timeout) or None,
        "access_log": False,  # the metrics count requests; a log line per request costs more than inference
        "server_header": False,
    }
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default handler a
    # SIGTERM would then kill the process (status 143) after a clean drain. Exit 0 instead.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    logging.getLogger("textae.serve").setLevel(log_level.upper())
    if settings.workers == 1:
        from textae.serve.app import create_app

        config = uvicorn.Config(create_app(settings, handle_signals=True), **options)
        uvicorn.Server(config).run()
        return
    # several workers: uvicorn spawns fresh processes (nothing is loaded before they start); each
    # rebuilds the app from the settings in the environment and loads the model in its lifespan
    os.environ[SETTINGS_ENV] = settings.to_json()
    with tempfile.TemporaryDirectory(prefix="textae-metrics-") as metrics_dir:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        uvicorn.run("textae.serve.app:app_from_environment", factory=True, workers=settings.workers, **options)
