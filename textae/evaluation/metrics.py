"""The metrics of the evaluations, in numpy only: ranks, Spearman, AUROC, row cosines."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def rankdata(values: ArrayLike) -> np.ndarray:
    """1-based ranks; tied values share the average of the ranks they span (scipy's 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    # runs of equal values in sorted order: every member gets the mean of the run's ranks
    _, first_index, counts = np.unique(values[order], return_index=True, return_counts=True)
    for start, count in zip(first_index, counts):
        if count > 1:
            ranks[order[start : start + count]] = start + (count + 1) / 2
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation in [-1, 1]: Pearson's r of the average ranks. NaN when either
    side is constant (the correlation is undefined)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D arrays of the same length, got {x.shape} and {y.shape}")
    rank_x, rank_y = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denominator = np.sqrt((rank_x**2).sum() * (rank_y**2).sum())
    return float((rank_x * rank_y).sum() / denominator) if denominator > 0 else float("nan")


def auroc(negative_scores: ArrayLike, positive_scores: ArrayLike) -> float:
    """Area under the ROC curve for 'positive scores higher', via the Mann-Whitney U statistic:
    the probability that a random positive outscores a random negative, ties counting half."""
    negative = np.asarray(negative_scores, dtype=np.float64).ravel()
    positive = np.asarray(positive_scores, dtype=np.float64).ravel()
    if len(negative) == 0 or len(positive) == 0:
        raise ValueError("auroc needs at least one score on each side")
    ranks = rankdata(np.concatenate([negative, positive]))
    u_statistic = ranks[len(negative) :].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u_statistic / (len(negative) * len(positive)))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of a with the same row of b; 0 where a vector is all zeros."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny), 0.0)
