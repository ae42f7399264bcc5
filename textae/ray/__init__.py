"""Embed and score corpora of any size on a Ray cluster (the `ray` extra; torch-free).

    pip install "textae[ray]"

Two ways in:

- `TextAEMapper`, a callable class for your own Ray Data pipeline: each actor loads the export
  once and maps batches of `{"text": [...]}` to the same rows plus `embedding` (a fixed-size list
  of float32) and/or `features`, `score`, `flagged`, `reconstruction`:

      ds = ray.data.read_text("s3://bucket/logs/")
      ds = ds.map_batches(TextAEMapper, fn_constructor_args=(ship_export("export/mine"),),
                          fn_constructor_kwargs={"columns": ("embedding",)}, batch_format="pyarrow",
                          batch_size=4096, num_cpus=2, compute=ray.data.ActorPoolStrategy(size=8))

- `embed_files` / `score_files` (`textae embed|score ... --engine ray`): text files or globs in,
  a folder of Parquet files out, ordered by (file, line), every line exactly once.

A package of its own, beside textae.runtime rather than inside it, for the same reason as
textae.serve: textae.runtime runs on the core install, and this needs an extra. Importing it
without the extra is the usual one-line error naming `pip install "textae[ray]"`.
"""

from textae.extras import import_optional

_PURPOSE = "textae.ray (--engine ray)"
import_optional("ray", _PURPOSE)
import_optional("ray.data", _PURPOSE)  # ray without its [data] extra lacks pyarrow and pandas
import_optional("pyarrow", _PURPOSE)

# after the checks above: a missing extra is their one-line hint, not an ImportError from a submodule
from textae.ray.job import RaySettings, RaySummary, embed_files, map_files, score_files  # noqa: E402
from textae.ray.mapper import COLUMNS, MapSettings, TextAEMapper  # noqa: E402
from textae.ray.shipping import ShippedExport, open_export, ship_export  # noqa: E402

__all__ = [
    "COLUMNS",
    "MapSettings",
    "RaySettings",
    "RaySummary",
    "ShippedExport",
    "TextAEMapper",
    "embed_files",
    "map_files",
    "open_export",
    "score_files",
    "ship_export",
]
