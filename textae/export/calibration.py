"""Calibration of an export on in-domain text the model never trained on: the run's validation split.

Two things a user cannot get from the graphs alone:
  - the distribution of anomaly scores of in-domain sentences (conformal percentiles, per
    precision, see textae/conformal.py), so `textae score --flag-percentile 99` flags about 1 %
    of unseen in-domain text, and never a percentile the sample is too small to support;
  - the mean and covariance of their sentence vectors (two small .npy files), the Gaussian that
    `textae generate` samples from.

The validation split is read from the run's token store (token ids, so no corpus file needs to
exist any more); a run folder without one (made by hand, or by an old textae) falls back to the
sentences the export samples for its own checks, and the manifest says which source was used.
Scoring goes through the runtime on the folder being built, so the percentiles are exactly the
numbers `TextAE.score` returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from textae.batching import DEFAULT_BATCH_SIZE
from textae.conformal import METHOD, conformal_thresholds
from textae.manifest import CALIBRATION_PERCENTILES, LATENT_COVARIANCE_FILE, LATENT_MEAN_FILE, percentile_key
from textae.runtime.model import TextAE
from textae.training.data import TokenizedCorpus, open_token_store

TOKEN_STORE_DIR = "tokens"


def open_run_store(run_dir: Path) -> tuple[TokenizedCorpus, TokenizedCorpus] | None:
    """The run's (train, validation) token store, or None when it has none or it cannot be read.

    A run resumed on a changed corpus can hold several stores; the newest is the one it last
    trained with.
    """
    stores = sorted(
        (path.parent for path in (Path(run_dir) / TOKEN_STORE_DIR).glob("*/valid_offsets.npy")),
        key=lambda store: store.stat().st_mtime,
    )
    if not stores:
        return None
    try:
        return open_token_store(stores[-1])
    except (OSError, ValueError):
        return None  # a damaged store must not block the export of good weights


def validation_token_ids(run_dir: Path) -> list[list[int]] | None:
    """The validation split's token ids from the run's token store, or None when it has none."""
    store = open_run_store(run_dir)
    if store is None:
        return None
    valid = store[1]
    return [valid.sentence(index).tolist() for index in range(len(valid))] or None


def training_token_ids(run_dir: Path, limit: int) -> list[list[int]] | None:
    """Up to limit training sentences' token ids, spread evenly over the run's training split (the
    same ones at every export of the run), or None when the run has no readable store."""
    store = open_run_store(run_dir)
    if store is None or len(store[0]) == 0:
        return None
    train = store[0]
    try:
        rows = np.unique(np.linspace(0, len(train) - 1, min(limit, len(train))).round().astype(np.int64))
        return [train.sentence(int(row)).tolist() for row in rows] or None
    except (OSError, ValueError):
        return None  # a truncated token file: fall back like a run without a store


def calibrate(
    folder: Path, precisions: list[str], validation: list[list[int]] | None, fallback_sentences: list[str], fallback_source: str
) -> dict[str, Any]:
    """Score and embed the validation sentences with the graphs in folder; write the latent
    statistics there; return the manifest's "calibration" section."""
    runtime = TextAE.load(folder, precision="fp32")
    if validation:
        token_ids, source = validation, "validation sentences of the run (never trained on)"
    else:
        token_ids = runtime.tokenize(fallback_sentences)
        source = f"sentences from {fallback_source} (the run folder has no validation split)"
    percentiles: dict[str, dict[str, float]] = {}
    unsupported: list[float] = []
    for precision in precisions:
        model = runtime if precision == "fp32" else TextAE.load(folder, precision=precision)
        scores = model.score_ids(token_ids, batch_size=DEFAULT_BATCH_SIZE)
        thresholds, unsupported = conformal_thresholds(scores, CALIBRATION_PERCENTILES)
        percentiles[precision] = {percentile_key(p): round(v, 6) for p, v in thresholds.items()}
    vectors = runtime.embed_ids(token_ids, batch_size=DEFAULT_BATCH_SIZE, raw=True).astype(np.float64)  # the latent Gaussian is raw
    mean = vectors.mean(axis=0)
    covariance = np.cov(vectors, rowvar=False) if len(vectors) > 1 else np.zeros((len(mean), len(mean)))
    np.save(folder / LATENT_MEAN_FILE, mean.astype(np.float32), allow_pickle=False)
    np.save(folder / LATENT_COVARIANCE_FILE, np.atleast_2d(covariance).astype(np.float32), allow_pickle=False)
    return {
        "source": source,
        "sentences": len(token_ids),
        "method": METHOD,
        "score_percentiles": percentiles,
        "unsupported_percentiles": [percentile_key(p) for p in unsupported],
        "latent_mean": LATENT_MEAN_FILE,
        "latent_covariance": LATENT_COVARIANCE_FILE,
    }
