"""metrics.jsonl: a record per --log-every steps ("train") and per validation ("valid"), and the
throughput the training records carry."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from textae.atomic import atomic_write_text
from textae.training.checkpoint import METRICS_FILE


class MetricsLog:
    """metrics.jsonl, appended a line at a time; on resume, records past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_through_step: int | None, *, writes: bool = True) -> None:
        """writes=False (every rank but 0 of a distributed run): a log that neither trims nor writes,
        so the file holds one record per step, rank 0's, and no two ranks rewrite it at once."""
        self.path, self.writes = path, writes
        if writes and keep_through_step is not None and path.exists():
            kept = [
                line for line in path.read_text(encoding="utf-8").splitlines() if _step_of(line) <= keep_through_step
            ]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.writes:
            return
        # opened per record: records are rare, and a killed run leaves at most one partial line
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # an unreadable (half-written) line is dropped


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run folder's metrics.jsonl, oldest first ([] before the first one)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Throughput:
    """Target tokens per second since the last restart (each training record starts a new window)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.tokens, self.start = 0.0, time.perf_counter()

    def add(self, tokens: float) -> float:
        """Count a step's tokens; returns the window's tokens per second so far."""
        self.tokens += tokens
        elapsed = time.perf_counter() - self.start
        return self.tokens / elapsed if elapsed > 0 else 0.0
