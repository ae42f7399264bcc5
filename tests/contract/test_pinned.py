"""Pinned values: a tiny export committed under tests/data/ must keep giving the same numbers.

A change in tokenization, graph building or the runtime's preprocessing (stripping, truncation,
padding, batching) that alters what a user's vectors are fails here, even when every other test
still passes because both sides of a comparison changed together.

tests/data/tiny-export is written by `python tools/make_tiny_export.py`, which also prints these
values. Regenerate it only when the export format changes so that the folder no longer loads (a new
format_version, a required manifest field, a new graph): then paste the printed values here and
say so in the commit. Never regenerate it to make a failing value pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.paths import TINY_EXPORT

from textae.runtime.model import TextAE

SENTENCES = [  # as in tools/make_tiny_export.py
    "Return the number of items in the list.",
    "The default value is None.",
    "",
    "She scored twice in the second half of the final.",
]
TOKEN_IDS = [
    [224, 53, 72, 87, 88, 85, 81, 264, 291, 88, 80, 69, 281, 293, 295, 267, 80, 86, 282, 264, 224, 79, 271, 87],  # cut at max_length 24
    [224, 55, 262, 288, 72, 73, 68, 88, 79, 87, 224, 89, 277, 88, 72, 286, 224, 49, 266, 72, 17],
]
FIRST_VALUES = [
    [-0.512602, -0.192932, 0.280899, -0.295157],
    [-0.506278, -0.163963, 0.327114, -0.233704],
    [-0.219755, -0.149515, 0.083613, -0.130855],
    [-0.372822, -0.215528, 0.308565, -0.185347],
]
SCORES = [5.35621, 5.50457, 5.59037, 5.50732]


@pytest.fixture(scope="module")
def tiny() -> TextAE:
    return TextAE.load(TINY_EXPORT, num_threads=1, precision="fp32")


def test_tokenization_is_pinned(tiny: TextAE) -> None:
    assert tiny.tokenize(SENTENCES[:2]) == TOKEN_IDS
    assert tiny.tokenize(["  The default value is None.\t"]) == TOKEN_IDS[1:]  # stripped like a corpus line


def test_sentence_vectors_are_pinned(tiny: TextAE) -> None:
    vectors = tiny.embed(SENTENCES)
    assert vectors.shape == (4, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[:, : len(FIRST_VALUES[0])], FIRST_VALUES, atol=1e-5, rtol=0)
    # alone or in any batch, the same vector
    np.testing.assert_allclose(tiny.embed(SENTENCES[::-1], batch_size=3)[::-1], vectors, atol=1e-5, rtol=0)


def test_anomaly_scores_are_pinned(tiny: TextAE) -> None:
    np.testing.assert_allclose(tiny.score(SENTENCES), SCORES, atol=1e-4, rtol=0)
