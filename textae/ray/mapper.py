"""TextAEMapper: the callable class for `Dataset.map_batches`, loading an export once per actor.

    ds.map_batches(TextAEMapper, fn_constructor_args=(ship_export("export/mine"),),
                   fn_constructor_kwargs={"columns": ("embedding", "score")},
                   batch_format="pyarrow", batch_size=4096, num_cpus=2,
                   compute=ray.data.ActorPoolStrategy(size=8))

Each batch comes back as a pyarrow.Table: the input's columns, then the asked-for ones. Vectors are
fixed-size lists of float32 (Parquet and pandas read them without Ray's tensor extension type).
A sentence's values do not depend on the batch it arrives in (the runtime's batch invariance).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from textae.batching import DEFAULT_BATCH_SIZE
from textae.errors import TextaeError
from textae.manifest import PRECISIONS
from textae.ray.shipping import ShippedExport, open_export
from textae.runtime.model import TextAE

# the columns TextAEMapper can add, in the order it adds them
COLUMNS = ("embedding", "features", "score", "flagged", "reconstruction")
ENCODER_OUTPUTS = {"embedding": "sentence_embedding", "features": "features"}  # column -> TextAE.embed output


@dataclass(frozen=True)
class MapSettings:
    """What TextAEMapper adds to each batch, and how it runs the model."""

    columns: tuple[str, ...] = ("embedding",)  # any of embedding, features, score, flagged, reconstruction
    text_column: str = "text"  # the input column holding one sentence per row
    normalize: bool = False  # scale embedding and features rows to unit length
    raw: bool = False  # embedding and features without the whitening the export stores (applied by default)
    threshold: float | None = None  # flagged is score >= threshold ...
    flag_percentile: float | None = None  # ... or >= this percentile of the export's in-domain scores (stored at export)
    precision: str | None = None  # fp32 or int8 (default: the one the export chose)
    num_threads: int | None = None  # onnxruntime threads (default: in an actor, the CPUs Ray gave it)
    batch_size: int = DEFAULT_BATCH_SIZE  # sentences per onnxruntime call within one Ray batch

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))  # a list from fn_constructor_kwargs is fine
        unknown = [name for name in self.columns if name not in COLUMNS]
        if not self.columns or unknown or len(set(self.columns)) != len(self.columns):
            raise TextaeError(f"columns must be distinct names among {', '.join(COLUMNS)}; got {list(self.columns)}")
        if ("flagged" in self.columns) != (self.threshold is not None or self.flag_percentile is not None):
            raise TextaeError("the flagged column needs a threshold or a flag_percentile, and they need the flagged column")
        if self.threshold is not None and self.flag_percentile is not None:
            raise TextaeError("give threshold or flag_percentile, not both")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise TextaeError(f"threshold must be a finite number, got {self.threshold}")
        if self.text_column in COLUMNS:
            raise TextaeError(f"text_column cannot be one of the columns the mapper adds ({self.text_column!r})")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise TextaeError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("num_threads", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise TextaeError(f"{name} must be a positive integer, got {value!r}")


class TextAEMapper:
    """Maps batches of sentences to vectors and scores with one TextAE per actor.

    model: a ShippedExport (from `ship_export`, checked against the driver's copy on every worker)
    or a path every worker can read. settings, or its fields as keywords (`columns=("score",)`).
    Threads: onnxruntime gets as many as the actor's `num_cpus` (at least one), so
    `map_batches(..., num_cpus=4)` means four threads per actor and no oversubscription.
    """

    def __init__(self, model: str | os.PathLike[str] | ShippedExport, settings: MapSettings | None = None, **fields: Any) -> None:
        self.settings = replace(settings or MapSettings(), **fields)
        threads = self.settings.num_threads or actor_threads()
        self.model: TextAE = open_export(model, precision=self.settings.precision, num_threads=threads)
        self.threshold = self._threshold()
        if "features" in self.settings.columns:
            self.model.embed([], output="features")  # an export made before features: refuse now, not per batch

    def __call__(self, batch: pa.Table | Mapping[str, Any] | Any) -> pa.Table:
        table = as_table(batch)
        settings = self.settings
        taken = [name for name in settings.columns if name in table.column_names]
        if taken:
            raise TextaeError(f"the batch already has column(s) {', '.join(taken)}; rename them or drop them first")
        texts = sentences_of(table, settings.text_column)
        model = self.model
        token_ids = model.tokenize(texts)  # once, for the encoder and the decoder alike
        scores = None
        for name in settings.columns:
            if name in ENCODER_OUTPUTS:
                vectors = model.embed_ids(token_ids, output=ENCODER_OUTPUTS[name], batch_size=settings.batch_size, normalize=settings.normalize, raw=settings.raw)
                column = fixed_size_list(vectors)
            elif name in ("score", "flagged"):
                if scores is None:
                    scores = model.score_ids(token_ids, batch_size=settings.batch_size)
                column = pa.array(scores, pa.float32()) if name == "score" else pa.array(scores >= self.threshold)
            else:
                column = pa.array(model.reconstruct(texts, settings.batch_size), pa.string())
            table = table.append_column(name, column)
        return table

    def _threshold(self) -> float | None:
        if self.settings.flag_percentile is not None:
            return self.model.anomaly_threshold(self.settings.flag_percentile)
        return self.settings.threshold


def actor_threads() -> int | None:
    """onnxruntime threads for this process: in a Ray actor, the CPUs Ray assigned it (at least 1);
    elsewhere None, onnxruntime's default (one per core)."""
    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.get_actor_id() is None:
        return None
    return max(1, int(context.get_assigned_resources().get("CPU", 0)))


def as_table(batch: Any) -> pa.Table:
    """A pyarrow.Table of a batch in any of Ray's batch formats: pyarrow, pandas, or a dict of columns."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, Mapping):
        return pa.table({name: _as_array(values) for name, values in batch.items()})
    if hasattr(batch, "columns") and hasattr(batch, "iloc"):  # a pandas DataFrame (pandas is imported by Ray only)
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise TextaeError(f"expected a batch as a pyarrow.Table, a pandas.DataFrame or a dict of columns, got a {type(batch).__name__}")


def sentences_of(table: pa.Table, column: str) -> list[str]:
    if column not in table.column_names:
        raise TextaeError(f"the batch has no column {column!r} (it has {', '.join(table.column_names) or 'none'}); set text_column")
    values = table.column(column)
    if len(values) == 0:
        return []  # an empty batch's column may have no type at all
    if values.null_count:
        row = values.to_pylist().index(None)
        raise TextaeError(f"column {column!r} is null in row {row} of a batch; drop or fill empty rows first")
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise TextaeError(f"column {column!r} must hold strings, not {values.type}")
    return values.to_pylist()


def fixed_size_list(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float32 -> a FixedSizeListArray of N lists of D float32, without copying the values."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])


def _as_array(values: Any) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, np.ndarray) and values.ndim == 2:  # Ray's numpy format gives vectors as 2-D arrays
        return fixed_size_list(values)
    return pa.array(values)
