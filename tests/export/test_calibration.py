"""Calibration stored at export: anomaly-score percentiles and the latent distribution of validation sentences."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.exports import copy_export, without_calibration
from helpers.tiny import TINY_MODEL, TINY_SENTENCES, TINY_TRAIN

from textae.conformal import conformal_thresholds
from textae.errors import TextaeError
from textae.manifest import CALIBRATION_PERCENTILES, Manifest
from textae.runtime.model import TextAE

Cli = Callable[..., tuple[int, str, str]]


def test_percentiles_are_those_of_the_runs_validation_sentences(trained_export: Path) -> None:
    # the trained run validates on the tiny corpus itself, so its token store's split is TINY_SENTENCES
    model = TextAE.load(trained_export)
    calibration = model.manifest.calibration
    assert calibration["source"].startswith("validation sentences of the run") and calibration["sentences"] == len(TINY_SENTENCES)
    stored = model.score_percentiles()
    # conformal: the k-th smallest of the 50 scores, k = ceil(51 p / 100); p99 and above need more sentences
    assert calibration["method"] == "conformal" and calibration["unsupported_percentiles"] == ["99", "99.5", "99.9"]
    assert list(stored) == [50.0, 75.0, 90.0, 95.0]
    ordered = np.sort(model.score(TINY_SENTENCES).astype(np.float64))
    np.testing.assert_allclose(list(stored.values()), ordered[[25, 38, 45, 48]], rtol=0, atol=1e-5)
    assert model.anomaly_threshold(95) == stored[95.0]


def test_a_percentile_the_sample_cannot_support_is_refused_with_what_it_needs(trained_export: Path, tmp_path: Path, cli: Cli) -> None:
    model = TextAE.load(trained_export)
    with pytest.raises(TextaeError, match=r"percentile 99 needs at least 99 in-domain validation sentences .* calibrated on 50"):
        model.anomaly_threshold(99)
    (tmp_path / "lines.txt").write_text("the cat sat on the mat.\n")
    code, _, err = cli("score", trained_export, tmp_path / "lines.txt", "--flag-percentile", "99.9")
    assert code == 2 and "needs at least 999" in err and "Traceback" not in err


def test_latent_statistics_are_the_mean_and_covariance_of_validation_vectors(trained_export: Path) -> None:
    model = TextAE.load(trained_export)
    vectors = model.embed(TINY_SENTENCES, raw=True).astype(np.float64)  # the latent Gaussian is of raw vectors
    distribution = model.latent_distribution()
    np.testing.assert_allclose(distribution.mean, vectors.mean(axis=0), atol=1e-5, rtol=0)
    np.testing.assert_allclose(distribution.covariance, np.cov(vectors, rowvar=False), atol=1e-5, rtol=0)
    files = model.manifest.files
    assert {"latent_mean.npy", "latent_covariance.npy"} <= set(files)


def test_every_precision_gets_its_own_percentiles(random_export: Path) -> None:
    # the random run has no token store: the export's own sample sentences are used, and named
    calibration = Manifest.load(random_export).calibration
    assert set(calibration["score_percentiles"]) == {"fp32", "int8"}
    assert "no validation split" in calibration["source"]
    fp32, int8 = (TextAE.load(random_export, precision=p) for p in ("fp32", "int8"))
    assert fp32.score_percentiles() != int8.score_percentiles()
    supported, _ = conformal_thresholds(int8.score(TINY_SENTENCES), CALIBRATION_PERCENTILES)
    np.testing.assert_allclose(list(int8.score_percentiles().values()), list(supported.values()), atol=1e-5, rtol=0)


def test_a_tampered_latent_file_is_refused(random_export: Path, tmp_path: Path) -> None:
    folder = copy_export(random_export, tmp_path / "tampered")
    covariance = np.load(folder / "latent_covariance.npy")
    np.save(folder / "latent_covariance.npy", covariance * 2)
    with pytest.raises(TextaeError, match=r"latent_covariance.npy: sha256 does not match"):
        TextAE.load(folder)


def test_exports_from_before_calibration_load_and_say_what_is_missing(random_export: Path, tmp_path: Path, cli: Cli) -> None:
    old = without_calibration(random_export, tmp_path / "old")
    model = TextAE.load(old)
    assert model.embed(TINY_SENTENCES[:2]).shape == (2, model.dim) and model.score_percentiles() == {}
    with pytest.raises(TextaeError, match="no calibrated score percentiles"):
        model.anomaly_threshold(99)
    with pytest.raises(TextaeError, match="no latent statistics"):
        model.generate(2)
    code, out, _ = cli("info", old)
    assert code == 0 and "calibration" in out and "re-export" in out


def test_score_flags_lines_above_a_stored_percentile(trained_export: Path, tmp_path: Path, cli: Cli) -> None:
    lines = TINY_SENTENCES[:5] + ["zzq xkcd vvv qqq", "completely unlike anything in the corpus, really."]
    (tmp_path / "mixed.txt").write_text("\n".join(lines) + "\n")
    model = TextAE.load(trained_export)
    threshold = model.anomaly_threshold(95)
    code, out, err = cli("score", trained_export, tmp_path / "mixed.txt", "--flag-percentile", "95")
    assert code == 0, err
    flagged = [int(line.split("\t")[0]) for line in out.splitlines()]
    scores = model.score(lines)
    assert flagged == [i + 1 for i, s in enumerate(scores) if s >= threshold]
    assert 6 in flagged and 7 in flagged  # text unlike the corpus scores above 95 % of it
    assert "95th percentile" in err


def test_info_shows_the_percentiles(trained_export: Path, cli: Cli) -> None:
    code, out, _ = cli("info", trained_export)
    assert code == 0
    out = " ".join(out.split())  # the table wraps long cells
    assert "anomaly score percentiles" in out and "p99.9 unsupported" in out and "latent_covariance.npy" in out
    assert "conformal thresholds" in out and "cannot support p99 (needs 99), p99.5 (needs 199), p99.9 (needs 999)" in out
    manifest = json.loads((trained_export / "textae.json").read_text())
    assert f"{manifest['calibration']['score_percentiles']['fp32']['50']:.3f}" in out


def _templated_sentences(rng: np.random.Generator, count: int) -> list[str]:
    # 4,096 possible sentences drawn alike: the corpus, its validation split and the "unseen" lines
    # below are exchangeable, which is what the conformal promise assumes of in-domain text
    parts = [
        ["the cat", "a dog", "my friend", "the teacher", "a farmer", "the children", "she", "he"],
        ["sees", "likes", "paints", "finds", "carries", "watches", "builds", "fixes"],
        ["the red kite", "a small boat", "the old piano", "fresh bread", "the quiet hills", "a letter", "the chair", "tea"],
        ["today.", "at night.", "in the park.", "again.", "slowly.", "before noon.", "with care.", "by the sea."],
    ]
    return [" ".join(str(rng.choice(words)) for words in parts) for _ in range(count)]


@pytest.mark.slow
def test_flags_on_unseen_in_domain_text_keep_the_promised_rate(tmp_path: Path) -> None:
    from rich.console import Console

    from textae.config import ModelConfig, TrainConfig
    from textae.export.folder import export_model
    from textae.training.loop import train

    rng = np.random.default_rng(11)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_templated_sentences(rng, 1500)) + "\n")
    run_dir = tmp_path / "run"
    settings = {**TINY_TRAIN, "eval_every": 30, "checkpoint_every": 30}
    train(TrainConfig(corpus=[str(corpus)], out=str(run_dir), max_steps=30, **settings), ModelConfig(**TINY_MODEL), show_progress=False)
    export_model(run_dir, tmp_path / "export", console=Console(file=io.StringIO()))
    model = TextAE.load(tmp_path / "export")
    calibration = model.manifest.calibration
    # 5 % of 1,500 lines would be 75, too few for p99: the small-corpus split holds out 200
    assert calibration["sentences"] == 200 and calibration["unsupported_percentiles"] == ["99.9"]
    scores = model.score(_templated_sentences(rng, 4000))
    # one calibration sample's exceedance scatters around 1 - p/100 (Beta, sd ~0.7 % at p99 and n = 200)
    for percentile, ceiling in ((90.0, 0.14), (95.0, 0.085), (99.0, 0.03)):
        realised = float(np.mean(scores > model.anomaly_threshold(percentile)))
        assert realised <= ceiling, (percentile, realised)
