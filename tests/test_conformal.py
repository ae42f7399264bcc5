"""Conformal flag thresholds: the ranks, the sizes each percentile needs, and the realised flag rate."""

from __future__ import annotations

import numpy as np
import pytest

from textae.conformal import conformal_rank, conformal_thresholds, sentences_needed
from textae.manifest import CALIBRATION_PERCENTILES


def test_each_stored_percentile_needs_p_over_100_minus_p_sentences() -> None:
    assert [sentences_needed(p) for p in CALIBRATION_PERCENTILES] == [1, 3, 9, 19, 99, 199, 999]
    for percentile in CALIBRATION_PERCENTILES:
        needed = sentences_needed(percentile)
        assert conformal_rank(needed, percentile) is not None and conformal_rank(needed - 1, percentile) is None


def test_ranks_are_exact_where_floats_would_round_up() -> None:
    assert conformal_rank(999, 99.9) == 999  # (999 + 1) * 0.999 is 999.0000000000001 in floats
    assert conformal_rank(56, 99) is None  # the 56-line split cannot support p99
    assert conformal_rank(56, 95) == 55 and conformal_rank(200, 99) == 199
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        conformal_rank(10, 100)


def test_thresholds_are_order_statistics_and_name_what_the_sample_cannot_support() -> None:
    scores = np.arange(1, 101, dtype=np.float32)[::-1]  # 100 sentences, unsorted
    supported, unsupported = conformal_thresholds(scores, CALIBRATION_PERCENTILES)
    assert supported == {50.0: 51.0, 75.0: 76.0, 90.0: 91.0, 95.0: 96.0, 99.0: 100.0}
    assert unsupported == [99.5, 99.9]


@pytest.mark.parametrize("calibration_size", [99, 200, 2000])
def test_unseen_in_domain_text_is_flagged_at_most_at_the_promised_rate(calibration_size: int) -> None:
    # exchangeable draws from one skewed distribution, like anomaly scores of in-domain text: over
    # many calibration samples, the share of new sentences above the p-th threshold is <= 1 - p/100
    # and >= that minus 1/(n+1) (the conformal guarantee), where np.percentile overshoots
    rng = np.random.default_rng(7)
    repeats, unseen = 400, 2000
    for percentile in (90.0, 95.0, 99.0):
        rates, interpolated = [], []
        for _ in range(repeats):
            calibration = rng.lognormal(1.0, 0.5, calibration_size)
            new = rng.lognormal(1.0, 0.5, unseen)
            threshold = conformal_thresholds(calibration, [percentile])[0][percentile]
            rates.append(np.mean(new > threshold))
            interpolated.append(np.mean(new > np.percentile(calibration, percentile)))
        promised = 1 - percentile / 100
        realised = float(np.mean(rates))
        # a calibration sample's exceedance is Beta distributed: 4 standard errors of the mean of repeats
        slack = 4 * np.sqrt(promised * (1 - promised) / (calibration_size + 2) / repeats)
        assert promised - 1 / (calibration_size + 1) - slack <= realised <= promised + slack, (percentile, realised)
        assert float(np.mean(interpolated)) > realised  # what textae stored before
