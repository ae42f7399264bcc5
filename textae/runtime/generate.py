"""Vectors to decode into new sentences: samples from the validation vectors' distribution, or near one sentence.

Torch-free (numpy only). The export stores the mean and covariance of the sentence vectors of the
run's validation split (`latent_mean.npy`, `latent_covariance.npy`); an autoencoder without a
prior (not a VAE) leaves holes in its latent space, so sampling where real sentences lie, a
Gaussian fitted to them, decodes far more often into well-formed text than sampling around zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from textae.errors import TextaeError

SPREAD_AROUND_THE_DISTRIBUTION = 1.0  # default: the validation vectors' own covariance
# default: 0.8 of each dimension's standard deviation. The decoder is robust to small moves: on the
# demo's model, 10 draws around one sentence decoded to 1 distinct sentence at 0.3, 3 at 0.5, 6 at
# 0.8 (all well formed) and 10 at 1.0 (some no longer well formed)
SPREAD_NEAR_A_SENTENCE = 0.8


@dataclass(frozen=True)
class LatentDistribution:
    """Mean (Z,) and covariance (Z, Z) of the validation vectors; factored once for sampling."""

    mean: np.ndarray
    covariance: np.ndarray

    def __post_init__(self) -> None:
        dim = self.mean.shape[0]
        if self.mean.ndim != 1 or self.covariance.shape != (dim, dim):
            raise TextaeError(f"latent statistics have shapes {self.mean.shape} and {self.covariance.shape}, expected (Z,) and (Z, Z)")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.covariance).all()):
            raise TextaeError("latent statistics contain NaN or infinity")

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))

    def factor(self) -> np.ndarray:
        """A (Z, Z) matrix A with A @ A.T = covariance; eigh tolerates the rank-deficient covariance
        of fewer validation sentences than dimensions (negative round-off eigenvalues become 0)."""
        values, vectors = np.linalg.eigh(self.covariance.astype(np.float64))
        return vectors * np.sqrt(np.clip(values, 0.0, None))

    def sample(self, count: int, rng: np.random.Generator, spread: float = SPREAD_AROUND_THE_DISTRIBUTION) -> np.ndarray:
        """count vectors from N(mean, spread^2 * covariance), (count, Z) float32."""
        noise = rng.standard_normal((count, self.mean.shape[0]))
        return (self.mean + spread * noise @ self.factor().T).astype(np.float32)

    def sample_near(
        self, vector: np.ndarray, count: int, rng: np.random.Generator, spread: float = SPREAD_NEAR_A_SENTENCE
    ) -> np.ndarray:
        """count vectors around vector: each dimension moved by spread times its standard deviation
        times a standard normal draw, (count, Z) float32."""
        noise = rng.standard_normal((count, self.mean.shape[0]))
        return (vector.astype(np.float64) + spread * noise * self.std).astype(np.float32)


def check_generate_options(count: int, spread: float | None) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise TextaeError(f"the number of sentences to generate must be a positive integer, got {count!r}")
    if spread is not None and not (isinstance(spread, (int, float)) and np.isfinite(spread) and spread >= 0):
        raise TextaeError(f"spread must be a non-negative number, got {spread!r}")
