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
