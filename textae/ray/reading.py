"""Reading text files on Ray workers into blocks of (file, line, text), as `textae embed` reads them.

Lines are read with textae.corpus (plain or .gz; empty lines skipped; cut to 4096 characters), so
a non-UTF-8 or binary file stops the job with the same one-line error as in one process, naming
the file as the user gave it and the line. Each file is one read task that streams blocks of up
to `chunk_lines` lines; every block carries its file's index and its own number in the file, so
the writer can name each contiguous run of output after its first line (textae.ray.parts).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from textae.corpus import iter_numbered_sentences
from textae.errors import TextaeError

FILE_INDEX = "__textae_file"  # internal columns: which input file, and which block of it
CHUNK_INDEX = "__textae_chunk"


def file_items(paths: list[Path]) -> list[dict[str, Any]]:
    """One row per input file for ray.data.from_items: its index, the path to open, the name to show."""
    return [{"index": index, "open": os.path.abspath(path), "name": str(path)} for index, path in enumerate(paths)]


def read_files(items: dict[str, Any], *, chunk_lines: int) -> Iterator[pa.Table]:
    """map_batches function: the rows of file_items -> blocks of their lines (a generator, so it streams)."""
    for index, path, name in zip(items["index"], items["open"], items["name"]):
        yield from read_file(int(index), str(path), str(name), chunk_lines)


def read_file(index: int, path: str, name: str, chunk_lines: int) -> Iterator[pa.Table]:
    if not os.path.exists(path):
        raise TextaeError(f"{name}: no such file on the Ray node at {ray.util.get_node_ip_address()} (every node "
                          "must see the input files at the same path: put them on shared storage)")  # fmt: skip
    lines: list[int] = []
    texts: list[str] = []
    chunk = 0
    for lineno, text in iter_numbered_sentences(Path(path), name=name):
        lines.append(lineno)
        texts.append(text)
        if len(texts) == chunk_lines:
            yield _block(index, chunk, name, lines, texts)
            lines, texts, chunk = [], [], chunk + 1
    if texts:
        yield _block(index, chunk, name, lines, texts)


def empty_block() -> pa.Table:
    """A block of no lines, with the columns every job's rows start with."""
    return pa.table({"file": pa.array([], pa.string()), "line": pa.array([], pa.int64()), "text": pa.array([], pa.string())})


def _block(index: int, chunk: int, name: str, lines: list[int], texts: list[str]) -> pa.Table:
    rows = len(texts)
    return pa.table({
        "file": pa.array([name] * rows, pa.string()),
        "line": pa.array(lines, pa.int64()),
        "text": pa.array(texts, pa.string()),
        FILE_INDEX: pa.array([index] * rows, pa.int32()),
        CHUNK_INDEX: pa.array([chunk] * rows, pa.int32()),
    })  # fmt: skip
