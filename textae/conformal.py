"""Split-conformal anomaly thresholds: the score above which an in-domain sentence is rarer than p %.

np.percentile of a small calibration sample interpolates between its largest scores, and a new
in-domain sentence then lands above the "99th percentile" far more often than 1 % of the time
(issue 22: 8.1 % of unseen normal lines, from a 56-line validation split). The conformal rule
(Vovk et al. 2005; Angelopoulos & Bates 2021, "A gentle introduction to conformal prediction")
takes the k-th smallest of n calibration scores, k = ceil((n + 1) p / 100). If the calibration
sentences and the new one are exchangeable (drawn alike from the same text), a new sentence scores
above it with probability at most 1 - p / 100, and at least that minus 1 / (n + 1). Where
k > n the sample cannot support p at all (n < p / (100 - p): 99 sentences for p99, 999 for
p99.9), and the export says so instead of storing a number that would not keep its promise.

Plain numpy and fractions: the export computes the thresholds, the training split sizes its
validation set with them, and the runtime explains a refused percentile, all from this one module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

import numpy as np

METHOD = "conformal"  # the manifest's name for thresholds made here; older exports interpolated


def _share(percentile: float) -> Fraction:
    # exact decimal arithmetic: (n + 1) * 99.9 / 100 in floats is 999.0000000000001 for n = 999
    value = Fraction(str(float(percentile))) / 100
    if not 0 < value < 1:
        raise ValueError(f"a percentile must be strictly between 0 and 100, got {percentile}")
    return value


def conformal_rank(sentences: int, percentile: float) -> int | None:
    """k of the k-th smallest calibration score (1-based), or None where n sentences cannot support it."""
    rank = math.ceil((sentences + 1) * _share(percentile))
    return rank if rank <= sentences else None


def sentences_needed(percentile: float) -> int:
    """The fewest calibration sentences that support `percentile` (99 for 99, 999 for 99.9)."""
    share = _share(percentile)
    return math.ceil(share / (1 - share))


def conformal_thresholds(scores: np.ndarray, percentiles: Iterable[float]) -> tuple[dict[float, float], list[float]]:
    """The thresholds of the percentiles the sample supports, and the percentiles it does not."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    supported: dict[float, float] = {}
    unsupported: list[float] = []
    for percentile in percentiles:
        rank = conformal_rank(len(ordered), percentile)
        if rank is None:
            unsupported.append(float(percentile))
        else:
            supported[float(percentile)] = float(ordered[rank - 1])
    return supported, unsupported
