"""The job's output: Parquet parts named by their first (file, line), so the folder reads in input order.

Each actor call maps one Ray batch with TextAEMapper and writes every contiguous run of it (rows of
one read block) as one part, `part-FFFFFF-LLLLLLLLLLLL.parquet` (file index, first line number).
Runs never overlap and the names sort as (file, line), so `pandas.read_parquet(folder)` gives the
rows in input order whatever order Ray ran the batches in. A part is written under a temporary
name and renamed, so a task that Ray retries after a lost node writes the same part again instead
of a second copy; `finish` then checks the parts the driver was told about against the folder.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from textae.errors import TextaeError
from textae.ray.mapper import MapSettings, TextAEMapper
from textae.ray.reading import CHUNK_INDEX, FILE_INDEX
from textae.ray.shipping import ShippedExport

LINE_DIGITS = 12
RECORD_FIELDS = ("part", "file_index", "first_line", "last_line", "rows")  # what each actor call returns per part


def part_name(file_index: int, first_line: int, file_digits: int) -> str:
    return f"part-{file_index:0{file_digits}d}-{first_line:0{LINE_DIGITS}d}.parquet"


class PartWriter:
    """The actor of `map_files`: TextAEMapper, then one Parquet part per contiguous run of the batch.

    A model that fails to load (a damaged copy on this node) is reported by the first batch rather
    than by the constructor: Ray keeps a task's exception (the driver turns it into the one-line
    error) but only the text of a constructor's."""

    def __init__(self, model: ShippedExport, settings: MapSettings, folder: str, file_digits: int) -> None:
        self.folder = Path(folder)
        self.file_digits = file_digits
        self.error: TextaeError | None = None
        try:
            if not self.folder.is_dir():
                raise TextaeError(f"{self.folder}: no such folder (the output must be on storage every node sees)")
            self.mapper = TextAEMapper(model, settings)
        except TextaeError as exc:
            self.error = TextaeError(f"{exc} (on the Ray node at {ray.util.get_node_ip_address()})")

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.error is not None:
            raise self.error
        mapped = self.mapper(batch)
        records = [self._write(mapped.slice(start, stop - start)) for start, stop in runs(batch)]
        return pa.table({name: [record[name] for record in records] for name in RECORD_FIELDS})

    def _write(self, run: pa.Table) -> dict[str, Any]:
        file_index = run.column(FILE_INDEX)[0].as_py()
        lines = run.column("line")
        first, last = lines[0].as_py(), lines[len(lines) - 1].as_py()
        name = part_name(file_index, first, self.file_digits)
        temporary = self.folder / f".{name}.{uuid.uuid4().hex}.tmp"  # dot files: readers of the folder skip them
        pq.write_table(run.drop_columns([FILE_INDEX, CHUNK_INDEX]), temporary)
        os.replace(temporary, self.folder / name)
        return {"part": name, "file_index": file_index, "first_line": first, "last_line": last, "rows": run.num_rows}


def runs(batch: pa.Table) -> list[tuple[int, int]]:
    """(start, stop) of each run of rows that follow each other in one read block. A batch holds
    slices of blocks in the order Ray queued them, which need not be the order of the files."""
    if batch.num_rows == 0:
        return []
    keys = np.asarray(batch.column(FILE_INDEX), dtype=np.int64) << 32 | np.asarray(batch.column(CHUNK_INDEX), dtype=np.int64)
    lines = np.asarray(batch.column("line"))
    breaks = (keys[1:] != keys[:-1]) | (lines[1:] <= lines[:-1])
    starts = [0, *(np.flatnonzero(breaks) + 1).tolist()]
    return list(zip(starts, [*starts[1:], batch.num_rows]))


@dataclass(frozen=True)
class Part:
    part: str
    file_index: int
    first_line: int
    last_line: int
    rows: int


def finish(folder: Path, records: Iterable[dict[str, Any]], out: Path, *, empty: pa.Table) -> list[Part]:
    """Check the parts reported by the actors, drop any file no record names (a killed attempt's),
    and move the folder to `out` in one rename. Returns the parts in (file, line) order.

    A corpus without a single line still gets one part, `empty` (no rows, the job's columns), so
    the folder reads as an empty table rather than as an error."""
    parts = sorted((Part(**record) for record in records), key=lambda part: (part.file_index, part.first_line))
    if not parts:
        name = part_name(0, 0, 6)
        pq.write_table(empty, folder / name)
        parts = [Part(name, 0, 0, 0, 0)]
    for before, after in itertools.pairwise(parts):
        if before.file_index == after.file_index and after.first_line <= before.last_line:
            raise TextaeError(f"{folder}: parts {before.part} and {after.part} overlap; the output is not trustworthy")
    names = {part.part for part in parts}
    if len(names) != len(parts):
        raise TextaeError(f"{folder}: a part was reported twice; the output is not trustworthy")
    missing = [name for name in sorted(names) if not (folder / name).is_file()]
    if missing:
        raise TextaeError(f"{folder / missing[0]}: written by a worker but not here ({len(missing)} part(s) missing): "
                          "the output must be on storage every node sees")  # fmt: skip
    for path in folder.iterdir():
        if path.name not in names:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if out.is_dir():
        out.rmdir()  # check_output_folder let it through only empty
    os.rename(folder, out)
    return parts
