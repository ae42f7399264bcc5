"""Files in and out of the runtime for the CLI: read sentences, write embeddings, pick anomalies.

Torch-free, like textae.runtime. Input files are read with textae.corpus, so a missing, binary or
non-UTF-8 file is a one-line error naming the file and line; empty lines are skipped.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from textae.atomic import atomic_write
from textae.batching import DEFAULT_BATCH_SIZE
from textae.corpus import check_readable_file, chunked, iter_file_lines
from textae.errors import TextaeError
from textae.runtime.model import TextAE

EMBEDDING_FORMATS = (".npy", ".jsonl")
CHUNK_SENTENCES = 1024  # embed this many at a time so the bar moves; results do not depend on it


def read_sentences(source: str | Path) -> list[str]:
    """The non-empty, stripped lines of a UTF-8 text file, or of standard input when source is '-'."""
    path = Path(source)
    if str(source) != "-":
        check_readable_file(path)
    return list(iter_file_lines(path))


def check_embedding_output(out: Path) -> None:
    """Refuse a bad output path before any work is done."""
    if out.suffix not in EMBEDDING_FORMATS:
        raise TextaeError(f"{out}: output must end in {' or '.join(EMBEDDING_FORMATS)} (NumPy array or JSON lines)")
    if not out.parent.is_dir():
        raise TextaeError(f"{out.parent}: output folder does not exist")
    if out.is_dir():
        raise TextaeError(f"{out}: is a folder")


def embed_file(
    model: TextAE,
    source: str | Path,
    out: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    normalize: bool = False,
    output: str = "sentence_embedding",
    raw: bool = False,
    console: Console | None = None,
) -> int:
    """Embed every line of source into out (.npy: an (N, D) float32 array; .jsonl: one
    {"text", OUTPUT} object per line, OUTPUT "sentence_embedding" or "features"); return N. Row i
    is the i-th non-empty line. raw as in `TextAE.embed`: without the export's stored whitening.

    Streams: lines are read, embedded and written CHUNK_SENTENCES at a time, so memory stays
    constant for any input size (standard input included). The file appears under its name only
    when complete.
    """
    out = Path(out)
    check_embedding_output(out)
    path = Path(source)
    if str(source) != "-":
        check_readable_file(path)
    console = console or Console(stderr=True)
    progress = Progress(
        TextColumn("embedding"),
        MofNCompleteColumn(),
        TextColumn("sentences"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rate]:,.0f} sentences/s"),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # a log file gets the final count line, not bar redraws
    )
    count = 0
    if output == "sentence_embedding":
        width = model.raw_dim if raw else model.dim
    else:
        width = model.raw_feature_dim if raw else model.feature_dim

    def write(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "wb") as handle, progress:
            task = progress.add_task("embedding", total=None, rate=0.0)
            started = time.perf_counter()
            if out.suffix == ".npy":
                handle.write(_npy_header(0, width))  # rewritten with the real row count at the end
            for chunk in chunked(iter_file_lines(path), CHUNK_SENTENCES):
                vectors = model.embed(chunk, batch_size=batch_size, normalize=normalize, output=output, raw=raw)
                if out.suffix == ".npy":
                    handle.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
                else:
                    handle.write("".join(_jsonl_line(t, v, output) for t, v in zip(chunk, vectors)).encode("utf-8"))
                count += len(chunk)
                progress.update(task, completed=count, rate=count / (time.perf_counter() - started))
            if out.suffix == ".npy":
                handle.seek(0)
                handle.write(_npy_header(count, width))

    atomic_write(out, write)
    return count


def write_embeddings(out: Path, sentences: Sequence[str], vectors: np.ndarray) -> None:
    """Write vectors already in memory, atomically, in the format embed_file streams."""
    out = Path(out)
    check_embedding_output(out)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            if out.suffix == ".npy":
                handle.write(_npy_header(len(vectors), vectors.shape[1]))
                handle.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            else:
                handle.write("".join(_jsonl_line(t, v) for t, v in zip(sentences, vectors)).encode("utf-8"))

    atomic_write(out, write)


# A fixed-size .npy (format 1.0) header, so the row count can be filled in after streaming.
NPY_HEADER_BYTES = 128


def _npy_header(rows: int, dim: int) -> bytes:
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    prefix = b"\x93NUMPY\x01\x00"
    body_length = NPY_HEADER_BYTES - len(prefix) - 2
    body = text.ljust(body_length - 1).encode("latin1") + b"\n"
    return prefix + struct.pack("<H", body_length) + body


def _jsonl_line(text: str, vector: np.ndarray, key: str = "sentence_embedding") -> str:
    return json.dumps({"text": text, key: vector.tolist()}, ensure_ascii=False) + "\n"


def flag_anomalies(scores: np.ndarray, *, top: int | None = None, threshold: float | None = None) -> list[int]:
    """Indices of the sentences to report: the `top` highest scores (highest first), or those scoring
    at least `threshold` (in input order), or all of them (in input order)."""
    check_flag_options(top, threshold)
    if top is not None:
        return [int(i) for i in np.argsort(-scores, kind="stable")[:top]]
    if threshold is not None:
        return [int(i) for i in np.flatnonzero(scores >= threshold)]
    return list(range(len(scores)))


def check_flag_options(top: int | None, threshold: float | None, percentile: float | None = None) -> None:
    if sum(option is not None for option in (top, threshold, percentile)) > 1:
        raise TextaeError("give one of --top, --threshold and --flag-percentile, not several")
    if top is not None and top < 1:
        raise TextaeError(f"--top must be a positive integer, got {top}")
