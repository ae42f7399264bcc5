"""The post-processing an export stores for `embed`: a whitening of each encoder output, fitted on
training sentences of the run (`textae.runtime.postprocess` holds the maths).

Issue 22 measured whitening fitted on 20,000 training sentences raising held-out STS-B for both the
sentence vector and the features, where plain centring did nothing; so the export fits it once, on
up to WHITEN_SAMPLE training sentences read from the run's token store, and `TextAE.embed` applies
it by default. A run folder without a store falls back to its validation split, then to the
sentences the export samples for its checks; the manifest says which source was used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from textae.batching import DEFAULT_BATCH_SIZE
from textae.errors import TextaeError
from textae.export.calibration import training_token_ids, validation_token_ids
from textae.manifest import postprocess_file_name
from textae.runtime.model import TextAE
from textae.runtime.postprocess import POSTPROCESS_METHODS, WHITEN, fit_block_whitening, fit_whitening

WHITEN_SAMPLE = 20_000  # training sentences the whitening is fitted on (issue 22's measurement)


def check_postprocess_options(postprocess: str, whiten_dim: int | None) -> None:
    if postprocess not in POSTPROCESS_METHODS:
        raise TextaeError(f"postprocess must be one of {', '.join(POSTPROCESS_METHODS)}; got {postprocess!r}")
    if whiten_dim is not None and (not isinstance(whiten_dim, int) or isinstance(whiten_dim, bool) or whiten_dim < 1):
        raise TextaeError(f"whiten dim must be a positive integer, got {whiten_dim!r}")


def sample_token_ids(
    run_dir: Path, fallback_ids: Callable[[], list[list[int]]], fallback_source: str
) -> tuple[list[list[int]], str]:
    """The sentences to fit on and where they come from: training, else validation, else fallback."""
    training = training_token_ids(run_dir, WHITEN_SAMPLE)
    if training:
        return training, "training sentences of the run"
    validation = validation_token_ids(run_dir)
    if validation:
        return validation[:WHITEN_SAMPLE], "validation sentences of the run (the run folder has no training split)"
    return fallback_ids(), f"sentences from {fallback_source} (the run folder has no token store)"


def fit_postprocess(
    folder: Path, run_dir: Path, fallback_sentences: list[str], fallback_source: str, whiten_dim: int | None = None
) -> dict[str, dict[str, Any]]:
    """Fit a whitening of every encoder output of the folder (raw vectors, fp32 graphs) on the run's
    sentences (`sample_token_ids`), write its arrays there, and return the manifest's
    "postprocess" section.

    whiten_dim keeps that many directions (clipped to each output's width and the sample's rank);
    None keeps them all."""
    runtime = TextAE.load(folder, precision="fp32")
    token_ids, source = sample_token_ids(run_dir, lambda: runtime.tokenize(fallback_sentences), fallback_source)
    outputs = ["sentence_embedding", "features"] if runtime.has_features else ["sentence_embedding"]
    section: dict[str, dict[str, Any]] = {}
    for output in outputs:
        vectors = runtime.embed_ids(token_ids, batch_size=DEFAULT_BATCH_SIZE, output=output, raw=True)
        dim = None if whiten_dim is None else min(whiten_dim, vectors.shape[1])
        # features that begin with the sentence vector are blocks of different things: each block
        # is whitened on its own and weighs the same (fit_block_whitening)
        blocks = list(runtime.config.feature_blocks) if output == "features" and runtime.config.features_read_vector else None
        whitening = fit_whitening(vectors, dim) if blocks is None else fit_block_whitening(vectors, blocks, dim)
        entry: dict[str, Any] = {"method": WHITEN, "dim": whitening.dim, "input_dim": whitening.input_dim}
        if blocks is not None:
            entry["blocks"] = blocks
        for key, array in (("mean", whitening.mean), ("transform", whitening.transform)):
            name = postprocess_file_name(output, key)
            np.save(folder / name, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
            entry[key] = name
        section[output] = {**entry, "sentences": len(token_ids), "source": source}
    return section
