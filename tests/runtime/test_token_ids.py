"""What the server needs from TextAE: truncation reported per input, and one-call embed/score of
token ids padded to a bucket width that never changes a result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.exports import VARIANTS, exported, make_run
from helpers.tiny import TINY_SENTENCES

from textae.errors import TextaeError
from textae.runtime import TextAE

LONG = " ".join(TINY_SENTENCES)


@pytest.fixture(scope="module", params=["default", "gru-bidirectional-mean-untied", "rnn-2layers-max"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, random_run: Path) -> TextAE:
    if request.param == "default":
        folder = exported(tmp_path_factory, random_run, quantize="int8")
    else:
        run = make_run(tmp_path_factory.mktemp("serve-variant") / request.param, random_run, **VARIANTS[request.param])
        folder = exported(tmp_path_factory, run)
    return TextAE.load(folder, num_threads=1, precision="fp32")


def test_tokenize_with_truncation_reports_cut_inputs(model: TextAE) -> None:
    sentences = ["the cat sat on the mat.", LONG, "", "  padded  "]
    ids, truncated = model.tokenize_with_truncation(sentences)
    assert ids == model.tokenize(sentences)
    assert truncated == [False, True, False, False]
    assert len(ids[1]) == model.config.max_length


def test_padding_to_a_wider_bucket_never_changes_vectors_or_scores(model: TextAE) -> None:
    sentences = TINY_SENTENCES[:6] + ["", LONG]
    ids = model.tokenize(sentences)
    alone_vectors = np.stack([model.embed([s])[0] for s in sentences])
    alone_scores = np.array([model.score([s])[0] for s in sentences])
    for width in (None, 8, model.config.max_length, model.config.max_length + 16):
        np.testing.assert_allclose(model.embed_ids(ids, width=width), alone_vectors, atol=1e-5)
        np.testing.assert_allclose(model.score_ids(ids, width=width), alone_scores, atol=1e-5)
    with pytest.raises(TextaeError, match="at least one"):
        model.embed_ids([])
