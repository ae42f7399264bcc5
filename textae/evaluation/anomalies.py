"""Anomaly detection: AUROC of the anomaly score at telling out-of-domain sentences from in-domain ones.

Accepts any object with a `score(sentences)` method (higher: more anomalous). AUROC is a probability (0-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from textae.evaluation.metrics import auroc
from textae.evaluation.readers import read_text_file


class Scorer(Protocol):
    def score(self, sentences: Sequence[str]) -> np.ndarray: ...


@dataclass
class AnomalyResult:
    in_path: str
    out_path: str
    in_sentences: int
    out_sentences: int
    auroc: float  # P(an out-of-domain sentence scores higher than an in-domain one), ties count half
    in_mean_score: float
    out_mean_score: float


def evaluate_anomalies(model: Scorer, in_path: Path, out_path: Path) -> AnomalyResult:
    """AUROC of the anomaly score at telling out_path's sentences from in_path's (1.0: perfect)."""
    inside, outside = read_text_file(in_path), read_text_file(out_path)
    in_scores, out_scores = model.score(inside), model.score(outside)
    return AnomalyResult(
        str(in_path), str(out_path), len(inside), len(outside),
        auroc(in_scores, out_scores), float(np.mean(in_scores)), float(np.mean(out_scores)),
    )  # fmt: skip
