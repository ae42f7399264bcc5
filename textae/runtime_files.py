"""Files in and out of the runtime for the CLI: read sentences, write embeddings, pick anomalies.

Torch-free, like textae.runtime. Input files are read with textae.corpus, so a missing, binary or
non-UTF-8 file is a one-line error naming the file and line; empty lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from textae.atomic import atomic_write
from textae.corpus import check_readable_file, iter_file_lines
from textae.errors import TextaeError
from textae.runtime import TextAE

EMBEDDING_FORMATS = (".npy", ".jsonl")
PROGRESS_MIN_SENTENCES = 2000  # below this, embedding takes about a second: no bar
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
    model: TextAE, source: str | Path, out: Path, *, batch_size: int = 64, normalize: bool = False, console: Console | None = None
) -> int:
    """Embed every line of source into out (.npy: an (N, D) float32 array; .jsonl: one
    {"text", "sentence_embedding"} object per line); return N. Row i is the i-th non-empty line."""
    out = Path(out)
    check_embedding_output(out)
    sentences = read_sentences(source)
    vectors = np.zeros((len(sentences), model.dim), dtype=np.float32)
    progress = Progress(
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=True,
        disable=len(sentences) < PROGRESS_MIN_SENTENCES,
    )
    with progress:
        task = progress.add_task("embedding", total=len(sentences))
        for start in range(0, len(sentences), CHUNK_SENTENCES):
            chunk = sentences[start : start + CHUNK_SENTENCES]
            vectors[start : start + len(chunk)] = model.embed(chunk, batch_size=batch_size, normalize=normalize)
            progress.advance(task, len(chunk))
    write_embeddings(out, sentences, vectors)
    return len(sentences)


def write_embeddings(out: Path, sentences: Sequence[str], vectors: np.ndarray) -> None:
    """Write atomically: a reader never sees half an array, and a failed run leaves no file."""
    out = Path(out)
    check_embedding_output(out)
    if out.suffix == ".npy":

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle, so np.save does not append a second .npy
                np.save(handle, vectors)

    else:

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as handle:
                for text, vector in zip(sentences, vectors):
                    handle.write(json.dumps({"text": text, "sentence_embedding": vector.tolist()}, ensure_ascii=False) + "\n")

    atomic_write(out, write)


def flag_anomalies(scores: np.ndarray, *, top: int | None = None, threshold: float | None = None) -> list[int]:
    """Indices of the sentences to report: the `top` highest scores (highest first), or those scoring
    at least `threshold` (in input order), or all of them (in input order)."""
    check_flag_options(top, threshold)
    if top is not None:
        return [int(i) for i in np.argsort(-scores, kind="stable")[:top]]
    if threshold is not None:
        return [int(i) for i in np.flatnonzero(scores >= threshold)]
    return list(range(len(scores)))


def check_flag_options(top: int | None, threshold: float | None) -> None:
    if top is not None and threshold is not None:
        raise TextaeError("give --top or --threshold, not both")
    if top is not None and top < 1:
        raise TextaeError(f"--top must be a positive integer, got {top}")
