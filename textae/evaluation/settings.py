"""What `textae similar` and `textae map` are configured with: plain dataclasses whose fields are the
commands' options (the CLI imports this module at start, so it imports nothing heavy).

Each field's trailing comment is its option's --help; tests/evaluation/test_cli_evaluate.py checks that fields
and options stay one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MAX_POINTS = 20_000  # more points add ink, not information, and t-SNE time grows fast


@dataclass
class LoadSettings:
    """How a command loads the export folder: `TextAE.load(model, threads, precision)`."""

    threads: int | None = None  # threads for onnxruntime (default: one per core)
    precision: str | None = None  # graphs to run: fp32 or int8 (default: the one the export chose)


@dataclass
class SimilarSettings:
    """Options of `textae similar` besides loading (MODEL and the queries are its arguments)."""

    corpus: Path  # sentences to search: a text file (one a line), or an INDEX.npz from `textae index`
    top: int = field(default=5, metadata={"metavar": "K"})  # neighbours per query


@dataclass
class MapSettings:
    """Options of `textae map` besides loading (MODEL and FILE are its arguments)."""

    out: Path = field(metadata={"metavar": "MAP.png"})  # PNG file to write
    labels: bool = False  # FILE has label<TAB>text lines: colour points by label
    method: str = "pca"  # projection to 2-D: pca (numpy SVD) or tsne (scikit-learn)
    max_points: int = MAX_POINTS  # draw a uniform sample of at most this many sentences
