"""Whitening of sentence vectors (numpy only): fit on a sample, apply to any vectors.

Whitening (Su et al. 2021, "Whitening sentence representations for better semantics and faster
retrieval"; WhiteningBERT) centres the vectors on the sample's mean and rotates and scales them so
their covariance becomes the identity: x -> (x - mean) @ W, W = U[:, :k] / sqrt(s[:k] + eps), with
U, s the eigenvectors and eigenvalues of the sample's covariance, largest first. Keeping the k
largest directions also reduces the width. Raw autoencoder vectors share a large common component
and a few dominant directions, so their cosines say little until whitened.

`textae export` fits one whitening per encoder output on the run's training sentences and stores
its mean and transform (see `textae.manifest`); `TextAE.embed` applies it unless asked for raw
vectors. Benchmarks fit baselines with the same `fit_whitening`, so every method is compared alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from textae.errors import TextaeError

WHITEN = "whiten"
POSTPROCESS_METHODS = ("whiten", "none")  # what `textae export --postprocess` accepts
# Directions with less variance than RANK_RELATIVE times the largest are dropped (the sample's
# numerical rank: float64 eigenvalues are exact to about 1e-16 of the largest); eps, far below that,
# keeps every scale finite and leaves each kept direction's whitened variance above 0.99.
RANK_RELATIVE = 1e-8
EPS_RELATIVE = 1e-10


@dataclass(frozen=True)
class Whitening:
    """A fitted whitening: (x - mean) @ transform. mean (D,), transform (D, k), float64."""

    mean: np.ndarray
    transform: np.ndarray

    @property
    def input_dim(self) -> int:
        return int(self.transform.shape[0])

    @property
    def dim(self) -> int:
        """The width of whitened vectors (k)."""
        return int(self.transform.shape[1])

    @property
    def invertible(self) -> bool:
        """Whether whitened vectors map back to raw ones: it keeps every direction (k == D)."""
        return self.dim == self.input_dim

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Whitened vectors (N, k) float32; see `apply_whitening`."""
        return apply_whitening(vectors, self.mean, self.transform)

    def undo(self, vectors: np.ndarray) -> np.ndarray:
        """The raw vectors (N, D) float32 that whiten to these (N, D): y @ inverse(transform) + mean.

        What lets `decode` take the vectors `embed` returns by default (and points between them:
        whitening is affine, so a midpoint maps to the raw midpoint)."""
        rows = np.asarray(vectors, dtype=np.float64)
        return (np.einsum("nk,kj->nj", rows, self._inverse, optimize=False) + self.mean).astype(np.float32)

    @cached_property
    def _inverse(self) -> np.ndarray:
        """The transform's inverse, computed once per loaded export rather than on every decode."""
        if not self.invertible:
            raise TextaeError(f"whitening to {self.dim} of {self.input_dim} dimensions cannot be undone")
        return np.linalg.inv(self.transform)


def fit_whitening(vectors: np.ndarray, dim: int | None = None) -> Whitening:
    """The whitening of a sample of vectors (N, D), keeping its dim largest directions (default: all).

    Computed in float64. A degenerate sample (fewer rows than dimensions, constant dimensions) has
    fewer than D directions with variance: k is clipped to that rank (at least 1), and eps keeps
    every scale finite, so no NaN or infinity comes out of it.
    """
    sample = np.asarray(vectors, dtype=np.float64)
    if sample.ndim != 2 or sample.shape[0] < 1 or sample.shape[1] < 1:
        raise TextaeError(f"whitening needs a sample of shape (N, D) with N, D >= 1; got {sample.shape}")
    if not np.isfinite(sample).all():
        raise TextaeError("whitening sample contains NaN or infinity")
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise TextaeError(f"whitening dim must be a positive integer, got {dim!r}")
    mean = sample.mean(axis=0)
    centred = sample - mean
    covariance = centred.T @ centred / max(len(sample) - 1, 1)
    values, vectors_ = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(values)[::-1]
    values, vectors_ = np.clip(values[order], 0.0, None), vectors_[:, order]
    largest = float(values[0])
    rank = int(np.count_nonzero(values > RANK_RELATIVE * largest)) if largest > 0 else 0
    k = max(1, min(dim or sample.shape[1], rank))
    eps = EPS_RELATIVE * largest if largest > 0 else 1.0
    transform = vectors_[:, :k] / np.sqrt(values[:k] + eps)
    return Whitening(mean, np.ascontiguousarray(transform))


def fit_block_whitening(vectors: np.ndarray, blocks: Sequence[int], dim: int | None = None) -> Whitening:
    """One whitening of vectors (N, sum(blocks)) that whitens each block of columns on its own and
    scales it to the same expected squared norm: a block-diagonal transform of fit_whitening's.

    For features whose blocks differ in scale and meaning (the sentence vector beside the token
    embeddings' pools): one whitening of the whole would mix them, and a wide block would outweigh a
    narrow one in a cosine. Each whitened block has about unit variance per kept direction, so
    dividing it by sqrt(its kept width) gives every block an expected squared norm of 1 (issue 22
    measured this as bench_token_mean.py's "balanced" candidates). dim, if given, is shared among
    the blocks in proportion to their widths (largest remainders; at least one direction each),
    and each block's share is clipped to its sample's rank as fit_whitening clips it.
    """
    sample = np.asarray(vectors, dtype=np.float64)
    widths = [int(width) for width in blocks]
    if not widths or any(width < 1 for width in widths) or sample.ndim != 2 or sample.shape[1] != sum(widths):
        raise TextaeError(f"block whitening needs vectors (N, {sum(widths)}) for blocks {widths}; got {sample.shape}")
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise TextaeError(f"whitening dim must be a positive integer, got {dim!r}")
    starts = np.cumsum([0, *widths])
    shares = [None] * len(widths) if dim is None else _shares(min(dim, sum(widths)), widths)
    fitted = [fit_whitening(sample[:, start:end], share) for start, end, share in zip(starts[:-1], starts[1:], shares)]
    transform = np.zeros((sample.shape[1], sum(part.dim for part in fitted)))
    column = 0
    for start, part in zip(starts, fitted):
        transform[start : start + part.input_dim, column : column + part.dim] = part.transform / np.sqrt(part.dim)
        column += part.dim
    return Whitening(np.concatenate([part.mean for part in fitted]), transform)


def _shares(total: int, widths: Sequence[int]) -> list[int]:
    """total split in proportion to widths by largest remainders, each share in [1, its width]."""
    exact = [total * width / sum(widths) for width in widths]
    shares = [max(1, int(share)) for share in exact]
    by_remainder = sorted(range(len(widths)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    for index in by_remainder[: max(0, total - sum(shares))]:
        shares[index] += 1
    return [min(share, width) for share, width in zip(shares, widths)]


def apply_whitening(vectors: np.ndarray, mean: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """(vectors - mean) @ transform, float32 (N, k), computed in float64 one row at a time.

    Row by row, with the same shapes in every call, so a vector's result has the same bits whether
    it is whitened alone or in a batch of any size (a matrix product's kernel, and so its order of
    summation, depends on the number of rows). einsum without `optimize` never hands the product
    to BLAS.
    """
    rows = np.asarray(vectors)
    mean, transform = np.asarray(mean, dtype=np.float64), np.asarray(transform, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != transform.shape[0] or mean.shape != (transform.shape[0],):
        raise TextaeError(f"cannot whiten vectors of shape {rows.shape} with a ({transform.shape[0]},) mean "
                          f"and a {transform.shape} transform")  # fmt: skip
    out = np.empty((len(rows), transform.shape[1]), dtype=np.float32)
    for index in range(len(rows)):
        out[index] = np.einsum("j,jk->k", rows[index].astype(np.float64) - mean, transform, optimize=False)
    return out
