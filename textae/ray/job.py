"""`textae embed|score --engine ray`: text files in, a folder of Parquet files out, on a Ray cluster.

    read (one task per file) -> TextAEMapper + Parquet part writer (an actor pool) -> the driver

The driver checks the inputs, the output folder and the model, ships the export (textae.ray.shipping),
runs the Ray Data pipeline and counts the parts as actors report them (the progress bar), then
checks them and renames the folder into place: `out` appears only complete, as `textae embed`'s
file does. Rows are (file, line, text, then the computed columns), in input order.

Retries (RaySettings.max_retries, 3 by default): a read task is retried that many times when its
worker or node dies (the file is read again from the start) and an actor is restarted that many
times; an actor's calls are retried for as long as it can be restarted, and a lost block is rebuilt
from its lineage. A user error (a non-UTF-8 line, a damaged model) is never retried: the job
stops with its one-line message.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import ray
import ray.data
from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from textae.batching import DEFAULT_BATCH_SIZE
from textae.corpus import resolve_paths
from textae.errors import TextaeError
from textae.ray.mapper import MapSettings, TextAEMapper
from textae.ray.parts import PartWriter, finish
from textae.ray.reading import empty_block, file_items, read_files
from textae.ray.session import job_context, ray_session, user_error
from textae.ray.shipping import ShippedExport, ship_export


@dataclass(frozen=True)
class RaySettings:
    """Where and how the job runs on Ray (the parts of `--engine ray` that are not the model's)."""

    address: str | None = None  # cluster to join: "auto" (the one `ray start` runs here) or HOST:PORT; None: ray.init's default (a local one)
    workers: int | None = None  # actors, each holding the model once (default: the cluster's CPUs // worker_cpus)
    worker_cpus: int = 1  # CPUs Ray reserves per actor, and its onnxruntime threads
    batch_lines: int = 4096  # lines per read block and per actor call; each call writes about one Parquet part
    max_retries: int = 3  # retries of a read task and restarts of an actor after its worker or node died (-1: no limit)
    model_on_shared_storage: bool = False  # workers read the export at its path (shared storage) instead of from the object store
    progress: bool = True  # a progress bar on a terminal (Ray's own progress lines elsewhere)

    def __post_init__(self) -> None:
        for name in ("workers", "worker_cpus", "batch_lines"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                option = {"worker_cpus": "threads", "batch_lines": "batch_lines"}.get(name, name)
                raise TextaeError(f"{option} must be a positive integer, got {value!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < -1:
            raise TextaeError(f"max_retries must be -1 (no limit) or a non-negative integer, got {self.max_retries!r}")


@dataclass(frozen=True)
class RaySummary:
    """What a finished job wrote."""

    out: Path
    files: int  # input files
    lines: int  # rows written: the non-empty lines of all files
    parts: int  # Parquet files in out
    workers: int  # actors the job ran with
    seconds: float


def embed_files(
    model: str | os.PathLike[str],
    inputs: Sequence[str],
    out: str | os.PathLike[str],
    *,
    normalize: bool = False,
    output: str = "sentence_embedding",
    raw: bool = False,
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    ray_settings: RaySettings = RaySettings(),
    console: Console | None = None,
) -> RaySummary:
    """Embed every non-empty line of the files or globs `inputs` into a folder of Parquet files with
    columns file, line, text and embedding (or, with output="features", features); raw=True without
    the export's stored whitening, as in `TextAE.embed`."""
    if output not in ("sentence_embedding", "features"):
        raise TextaeError(f"output must be one of sentence_embedding, features; got {output!r}")
    column = "embedding" if output == "sentence_embedding" else "features"
    settings = MapSettings(columns=(column,), normalize=normalize, raw=raw, precision=precision, batch_size=batch_size)
    return map_files(model, inputs, out, settings, ray_settings, console=console)


def score_files(
    model: str | os.PathLike[str],
    inputs: Sequence[str],
    out: str | os.PathLike[str],
    *,
    threshold: float | None = None,
    flag_percentile: float | None = None,
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    ray_settings: RaySettings = RaySettings(),
    console: Console | None = None,
) -> RaySummary:
    """Score every non-empty line of the files or globs `inputs` into a folder of Parquet files with
    columns file, line, text, score and, given a threshold or a flag_percentile, flagged."""
    flags = threshold is not None or flag_percentile is not None
    settings = MapSettings(
        columns=("score", "flagged") if flags else ("score",), threshold=threshold, flag_percentile=flag_percentile,
        precision=precision, batch_size=batch_size,
    )  # fmt: skip
    return map_files(model, inputs, out, settings, ray_settings, console=console)


def map_files(
    model: str | os.PathLike[str],
    inputs: Sequence[str],
    out: str | os.PathLike[str],
    settings: MapSettings,
    ray_settings: RaySettings = RaySettings(),
    *,
    console: Console | None = None,
) -> RaySummary:
    """Run TextAEMapper with `settings` over every non-empty line of `inputs` into Parquet under `out`."""
    started = time.perf_counter()
    out = Path(out)
    if any(str(pattern) == "-" for pattern in inputs):
        raise TextaeError("--engine ray reads files, not standard input (-): save the text to a file first")
    paths = resolve_paths([str(pattern) for pattern in inputs])
    check_output_folder(out)
    if settings.text_column != "text":
        raise TextaeError(f"map_files reads lines into the column 'text', not {settings.text_column!r}")
    # open the model here first: a bad folder, precision, percentile or output fails before the
    # cluster starts; the empty table it maps is the schema of a job's rows (for an empty corpus)
    schema = TextAEMapper(model, replace(settings, num_threads=1))(empty_block())
    console = console or Console(stderr=True)
    # absolute: workers do not share the driver's working directory
    staging = out.parent.absolute() / f".{out.name}.incomplete-{uuid.uuid4().hex[:12]}"
    with ray_session(ray_settings.address):
        workers = ray_settings.workers or max(1, int(ray.cluster_resources().get("CPU", 0)) // ray_settings.worker_cpus)
        shipped = ship_export(model, shared_storage=ray_settings.model_on_shared_storage)
        staging.mkdir()
        try:
            # one live display: ours on a terminal, Ray's progress lines in a log
            with job_context(ray_progress=ray_settings.progress and not console.is_terminal):
                dataset = _pipeline(shipped, settings, ray_settings, paths, staging, workers)
                records = _collect(dataset, console, enabled=ray_settings.progress)
            parts = finish(staging, records, out, empty=schema)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            error = user_error(exc)
            if error is not None:
                raise error from None
            raise
    return RaySummary(out, len(paths), sum(part.rows for part in parts), len(parts), workers, time.perf_counter() - started)


def check_output_folder(out: Path) -> None:
    """The output must be a new (or empty) folder whose parent exists: parts of two runs never mix."""
    if out.suffix in (".npy", ".jsonl", ".parquet"):
        raise TextaeError(f"{out}: --engine ray writes a folder of Parquet files; give a folder name, e.g. {out.with_suffix('')}/")
    if not out.parent.is_dir():
        raise TextaeError(f"{out.parent}: output folder's parent does not exist")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TextaeError(f"{out}: already exists and is not an empty folder; remove it or choose another --out")


def _pipeline(
    shipped: ShippedExport, settings: MapSettings, ray_settings: RaySettings, paths: list[Path], staging: Path, workers: int
) -> ray.data.Dataset:
    retries = ray_settings.max_retries
    items = ray.data.from_items(file_items(paths), override_num_blocks=len(paths))
    with warnings.catch_warnings():
        # Retries are only settable through map_batches' **ray_remote_args, which Ray 2.60 marks
        # deprecated (to go in 2.64, the extra's upper bound) without a named replacement yet.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=DeprecationWarning)
        lines = items.map_batches(
            read_files, fn_kwargs={"chunk_lines": ray_settings.batch_lines}, batch_size=1,
            # No CPU reserved: the actors hold the cluster's CPUs, and a read task that waited for
            # one would wait forever; reading a line costs a small fraction of embedding it.
            num_cpus=0, compute=ray.data.TaskPoolStrategy(size=max(1, min(len(paths), workers))), max_retries=retries,
        )  # fmt: skip
        return lines.map_batches(
            PartWriter, fn_constructor_args=(shipped, settings, str(staging), max(6, len(str(len(paths) - 1)))),
            batch_size=ray_settings.batch_lines, batch_format="pyarrow", num_cpus=ray_settings.worker_cpus,
            # A call is retried for as long as its actor can be restarted: Ray counts every attempt
            # on an actor whose node is not yet known to be dead, so a bounded count ran out in the
            # fault test's one node loss. A call that raises (a user error) is never retried.
            compute=ray.data.ActorPoolStrategy(size=workers), max_restarts=retries, max_task_retries=-1,
        )  # fmt: skip


def _collect(dataset: ray.data.Dataset, console: Console, *, enabled: bool) -> list[dict[str, object]]:
    """Run the pipeline; the actors' part records, with a bar of lines written and lines/s."""
    progress = Progress(
        TextColumn("{task.description}"), TextColumn("{task.completed:,} lines"), TimeElapsedColumn(),
        TextColumn("{task.fields[rate]:,.0f} lines/s"), console=console, transient=True,
        disable=not (enabled and console.is_terminal),
    )  # fmt: skip
    records: list[dict[str, object]] = []
    lines = 0
    with progress:
        task = progress.add_task("textae on Ray", total=None, rate=0.0)
        started = time.perf_counter()
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            records.extend(batch.to_pylist())
            lines += sum(batch.column("rows").to_pylist())
            progress.update(task, completed=lines, rate=lines / max(time.perf_counter() - started, 1e-9))
    return records
