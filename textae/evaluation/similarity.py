"""Sentence similarity: Spearman x100 between the cosine of each pair's vectors and its gold score.

Accepts any object with an `embed(sentences)` method, so a benchmark can put baselines through the
very same code (the probes use the same Embedder and embed_unique).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from textae.errors import TextaeError
from textae.evaluation.metrics import row_cosines, spearman
from textae.evaluation.readers import read_sts_file


class Embedder(Protocol):
    def embed(self, sentences: Sequence[str]) -> np.ndarray: ...


@dataclass
class StsResult:
    path: str
    pairs: int
    spearman: float  # x100, cosine similarity against the gold scores


def evaluate_sts(model: Embedder, path: Path) -> StsResult:
    """Spearman x100 between the cosine similarity of each pair's vectors and its gold score."""
    pairs = read_sts_file(path)
    vectors = embed_unique(model, pairs.first + pairs.second)
    similarity = row_cosines(vectors[: len(pairs.first)], vectors[len(pairs.first) :])
    correlation = spearman(similarity, pairs.scores)
    if np.isnan(correlation):
        raise TextaeError(f"{path}: Spearman correlation is undefined (all gold scores, or all similarities, are equal)")
    return StsResult(str(path), len(pairs.scores), 100 * correlation)


def embed_unique(model: Embedder, sentences: Sequence[str]) -> np.ndarray:
    """Vectors of sentences, embedding each distinct sentence once (STS and probe sets repeat some)."""
    unique, inverse = np.unique(np.array(sentences, dtype=object), return_inverse=True)
    vectors = np.asarray(model.embed(list(unique)))
    return vectors[inverse.ravel()]
