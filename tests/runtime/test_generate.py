"""Generation: vectors sampled from the validation vectors' Gaussian, or near a sentence, decoded greedily."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny import TINY_SENTENCES

from textae.errors import TextaeError
from textae.runtime.generate import LatentDistribution
from textae.runtime.model import TextAE

Cli = Callable[..., tuple[int, str, str]]


def test_samples_follow_the_stored_mean_and_covariance() -> None:
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((4, 4))
    distribution = LatentDistribution(np.array([1.0, -2.0, 0.5, 3.0]), mixing @ mixing.T)
    samples = distribution.sample(40_000, np.random.default_rng(1))
    assert samples.dtype == np.float32 and samples.shape == (40_000, 4)
    np.testing.assert_allclose(samples.mean(axis=0), distribution.mean, atol=0.05)
    np.testing.assert_allclose(np.cov(samples, rowvar=False), distribution.covariance, atol=0.1 * np.abs(distribution.covariance).max())
    half = distribution.sample(40_000, np.random.default_rng(1), spread=0.5)
    np.testing.assert_allclose(np.cov(half, rowvar=False), distribution.covariance / 4, atol=0.03 * np.abs(distribution.covariance).max())


def test_samples_near_a_vector_move_each_dimension_by_spread_times_its_std() -> None:
    distribution = LatentDistribution(np.zeros(3), np.diag([4.0, 1.0, 0.25]))
    centre = np.array([10.0, 0.0, -1.0])
    samples = distribution.sample_near(centre, 40_000, np.random.default_rng(0), spread=0.5)
    np.testing.assert_allclose(samples.mean(axis=0), centre, atol=0.02)
    np.testing.assert_allclose(samples.std(axis=0), 0.5 * np.array([2.0, 1.0, 0.5]), rtol=0.03)


def test_a_rank_deficient_covariance_still_samples() -> None:
    # fewer validation sentences than dimensions give a singular covariance
    vectors = np.random.default_rng(0).standard_normal((3, 8))
    distribution = LatentDistribution(vectors.mean(axis=0), np.cov(vectors, rowvar=False))
    samples = distribution.sample(10, np.random.default_rng(0))
    assert np.isfinite(samples).all()


def test_generate_is_repeatable_with_a_seed(trained_export: Path) -> None:
    model = TextAE.load(trained_export)
    first = model.generate(8, seed=3)
    assert len(first) == 8 and all(isinstance(text, str) for text in first)
    assert model.generate(8, seed=3) == first
    assert model.generate(8, seed=4) != first


def test_generate_near_a_sentence_with_no_spread_is_its_reconstruction(trained_export: Path) -> None:
    model = TextAE.load(trained_export)
    sentence = TINY_SENTENCES[3]
    assert model.generate(3, near=sentence, spread=0.0, seed=0) == model.reconstruct([sentence]) * 3
    wider = model.generate(20, near=sentence, spread=3.0, seed=0)
    assert len(set(wider)) > 1


def test_generate_refuses_bad_arguments(trained_export: Path) -> None:
    model = TextAE.load(trained_export)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(TextaeError, match="positive integer"):
            model.generate(bad)  # type: ignore[arg-type]
    with pytest.raises(TextaeError, match="spread must be a non-negative number"):
        model.generate(2, spread=float("nan"))
    with pytest.raises(TextaeError, match="near must be a sentence"):
        model.generate(2, near=["a list"])  # type: ignore[arg-type]


def test_generate_command_prints_n_lines(trained_export: Path, cli: Cli) -> None:
    code, out, err = cli("generate", trained_export, "-n", 5, "--seed", 1)
    assert code == 0, err
    assert out.splitlines() == TextAE.load(trained_export).generate(5, seed=1)
    code, out, err = cli("generate", trained_export, "-n", 2, "--near", TINY_SENTENCES[0], "--spread", 0, "--seed", 1)
    assert code == 0, err
    assert out.splitlines() == TextAE.load(trained_export).reconstruct([TINY_SENTENCES[0]]) * 2
