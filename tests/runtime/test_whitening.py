"""textae.runtime.postprocess: the whitening's maths, its batch invariance and degenerate samples."""

from __future__ import annotations

import numpy as np
import pytest

from textae.errors import TextaeError
from textae.runtime.postprocess import apply_whitening, fit_block_whitening, fit_whitening


def _correlated(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) * np.geomspace(10.0, 1.0, dim)  # very unequal variances
    return (rng.standard_normal((rows, dim)) @ mixing + 5.0).astype(np.float32)


def test_whitened_sample_has_zero_mean_and_identity_covariance() -> None:
    sample = _correlated(4000, 12)
    whitening = fit_whitening(sample)
    whitened = whitening.apply(sample).astype(np.float64)
    assert whitening.dim == 12
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(12), atol=2e-3)


def test_dim_keeps_the_largest_directions() -> None:
    sample = _correlated(2000, 10)
    whitening = fit_whitening(sample, dim=3)
    whitened = whitening.apply(sample)
    assert whitened.shape == (2000, 3) and whitened.dtype == np.float32 and whitening.transform.shape == (10, 3)
    np.testing.assert_allclose(np.cov(whitened.astype(np.float64), rowvar=False), np.eye(3), atol=2e-3)
    # the kept directions are the first 3 of the full whitening (same eigenvectors, largest first)
    full = fit_whitening(sample).apply(sample)
    np.testing.assert_allclose(np.abs(whitened), np.abs(full[:, :3]), atol=1e-4)


def test_a_vector_whitened_alone_has_the_bits_it_has_in_any_batch() -> None:
    sample = _correlated(500, 64, seed=1)
    whitening = fit_whitening(sample)
    batched = whitening.apply(sample)
    alone = np.concatenate([whitening.apply(sample[i : i + 1]) for i in range(len(sample))])
    assert np.array_equal(batched, alone)
    for start, size in ((0, 2), (3, 7), (100, 257), (499, 1)):
        assert np.array_equal(whitening.apply(sample[start : start + size]), batched[start : start + size])
    np.testing.assert_allclose(batched, (sample.astype(np.float64) - whitening.mean) @ whitening.transform, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "sample",
    [
        np.random.default_rng(2).standard_normal((5, 40)),  # fewer rows than dimensions
        np.c_[np.random.default_rng(3).standard_normal((200, 6)), np.ones((200, 4))],  # constant dimensions
        np.ones((50, 8)),  # no variance at all
        np.ones((1, 8)),  # one row
    ],
    ids=["few-rows", "constant-dims", "constant", "one-row"],
)
def test_degenerate_samples_give_finite_whitenings(sample: np.ndarray) -> None:
    whitening = fit_whitening(sample)
    rank = np.linalg.matrix_rank(sample - sample.mean(axis=0))
    assert whitening.dim == max(1, rank) and np.isfinite(whitening.transform).all()
    probe = np.random.default_rng(4).standard_normal((10, sample.shape[1]))
    assert np.isfinite(whitening.apply(sample)).all() and np.isfinite(whitening.apply(probe)).all()
    assert fit_whitening(sample, dim=100).dim == whitening.dim  # a dim beyond the rank is clipped to it


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(TextaeError, match="shape"):
        fit_whitening(np.zeros((0, 4)))
    with pytest.raises(TextaeError, match="NaN"):
        fit_whitening(np.full((3, 2), np.nan))
    with pytest.raises(TextaeError, match="positive integer"):
        fit_whitening(np.eye(3), dim=0)
    with pytest.raises(TextaeError, match="cannot whiten"):
        apply_whitening(np.zeros((2, 5)), np.zeros(4), np.eye(4))


def test_block_whitening_whitens_each_block_alone_and_weighs_them_alike() -> None:
    """Features made of blocks (the sentence vector beside token pools): each block is whitened on
    its own, with an expected squared norm of 1 whatever its width, and the blocks stay unmixed."""
    sample = np.concatenate([_correlated(4000, 4, seed=2) * 100.0, _correlated(4000, 12, seed=3)], axis=1)
    whitening = fit_block_whitening(sample, [4, 12])
    assert whitening.dim == 16 and whitening.invertible
    assert not whitening.transform[:4, 4:].any() and not whitening.transform[4:, :4].any()  # block-diagonal
    whitened = whitening.apply(sample).astype(np.float64)
    for block, part in ((slice(0, 4), sample[:, :4]), (slice(4, 16), sample[:, 4:])):
        width = block.stop - block.start
        np.testing.assert_allclose(np.cov(whitened[:, block], rowvar=False), np.eye(width) / width, atol=2e-3)
        np.testing.assert_allclose(whitened[:, block], fit_whitening(part).apply(part) / np.sqrt(width), atol=1e-4)
        assert abs(np.mean((whitened[:, block] ** 2).sum(axis=1)) - 1.0) < 1e-2
    np.testing.assert_allclose(whitening.undo(whitening.apply(sample)), sample, rtol=1e-4, atol=1e-2)


def test_block_whitening_shares_dim_among_the_blocks() -> None:
    sample = _correlated(3000, 16, seed=4)
    assert fit_block_whitening(sample, [4, 12], dim=8).dim == 8  # 2 + 6
    assert fit_block_whitening(sample, [4, 4, 4, 4], dim=5).dim == 5  # one block keeps the remainder
    assert fit_block_whitening(sample, [1, 15], dim=2).dim == 2  # every block keeps at least one
    with pytest.raises(TextaeError, match=r"block whitening needs vectors \(N, 12\) for blocks \[4, 8\]"):
        fit_block_whitening(sample, [4, 8])
    with pytest.raises(TextaeError, match="whitening dim must be a positive integer"):
        fit_block_whitening(sample, [4, 12], dim=0)
