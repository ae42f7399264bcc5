"""Calibration stored at export: anomaly-score percentiles and the latent distribution of validation sentences."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.exports import copy_export, without_calibration
from helpers.tiny import TINY_SENTENCES

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
    assert list(stored) == list(CALIBRATION_PERCENTILES)
    expected = np.percentile(model.score(TINY_SENTENCES).astype(np.float64), CALIBRATION_PERCENTILES)
    np.testing.assert_allclose(list(stored.values()), expected, rtol=0, atol=1e-5)
    assert list(stored.values()) == sorted(stored.values())
    assert model.anomaly_threshold(99) == stored[99.0]


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
    np.testing.assert_allclose(
        list(int8.score_percentiles().values()),
        np.percentile(int8.score(TINY_SENTENCES).astype(np.float64), CALIBRATION_PERCENTILES),
        atol=1e-5, rtol=0,
    )  # fmt: skip


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
    threshold = model.anomaly_threshold(99)
    code, out, err = cli("score", trained_export, tmp_path / "mixed.txt", "--flag-percentile", "99")
    assert code == 0, err
    flagged = [int(line.split("\t")[0]) for line in out.splitlines()]
    scores = model.score(lines)
    assert flagged == [i + 1 for i, s in enumerate(scores) if s >= threshold]
    assert 6 in flagged and 7 in flagged  # text unlike the corpus scores above 99 % of it
    assert "99th percentile" in err


def test_info_shows_the_percentiles(trained_export: Path, cli: Cli) -> None:
    code, out, _ = cli("info", trained_export)
    assert code == 0
    assert "anomaly score percentiles" in out and "p99.9" in out and "latent_covariance.npy" in out
    manifest = json.loads((trained_export / "textae.json").read_text())
    assert f"{manifest['calibration']['score_percentiles']['fp32']['50']:.3f}" in out
