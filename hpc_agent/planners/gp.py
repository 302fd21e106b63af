"""A Gaussian process small enough to read: the model that picks the TPE planner's refinements.

Why our own and not Optuna's ``GPSampler``: that one needs torch, and torch must stay optional
for the driver; this needs numpy only (already there through Optuna), and ~50 points in a
handful of dimensions is all it is asked to model.

The model: inputs in the unit cube (the caller encodes configurations), outputs standardised
here; a Matérn-5/2 kernel with one length scale per input and a noise term, chosen by maximum
marginal likelihood over a fixed grid followed by a coordinate search (no optimizer, no
randomness: the same data give the same model). Lower outputs are better; callers negate a
metric to maximise. One likelihood evaluation costs O(n^3): callers keep n in the hundreds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

SCALE_GRID = (0.1, 0.2, 0.4, 0.8, 1.6)  # length scales tried for every input at once (unit cube)
NOISE_GRID = (1e-4, 1e-2, 0.1, 0.3)  # noise variances tried, in units of the outputs' variance
SCALE_BOUNDS = (0.02, 10.0)
NOISE_BOUNDS = (1e-6, 1.0)
SEARCH_SWEEPS = 2  # coordinate-search passes after the grid
JITTER = 1e-8  # keeps the Cholesky factorisation stable when points nearly coincide


def matern52(a: Array, b: Array, scales: Array) -> Array:
    """The Matérn-5/2 kernel matrix between the rows of ``a`` and ``b`` (unit signal variance)."""
    d = np.sqrt((((a[:, None, :] - b[None, :, :]) / scales) ** 2).sum(-1))
    s = math.sqrt(5.0) * d
    out: Array = (1.0 + s + s * s / 3.0) * np.exp(-s)
    return out


def _factor(x: Array, scales: Array, noise: float) -> Array | None:
    k = matern52(x, x, scales) + (noise + JITTER) * np.eye(len(x))
    try:
        chol: Array = np.asarray(np.linalg.cholesky(k), dtype=np.float64)
    except np.linalg.LinAlgError:
        return None
    return chol


def _solve(chol: Array, y: Array) -> Array:
    out: Array = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
    return out


def neg_log_likelihood(x: Array, y: Array, scales: Array, noise: float) -> float:
    """Negative log marginal likelihood of standardised ``y`` (up to a constant); inf when the
    kernel matrix is not positive definite."""
    chol = _factor(x, scales, noise)
    if chol is None:
        return math.inf
    return float(0.5 * y @ _solve(chol, y) + np.log(np.diag(chol)).sum())


def fit_hyperparameters(x: Array, y: Array) -> tuple[Array, float]:
    """(length scales, noise) maximising the marginal likelihood: the best point of the grid,
    then each length scale and the noise halved or doubled while that helps."""
    dim = x.shape[1]
    scales, noise = np.full(dim, SCALE_GRID[0]), NOISE_GRID[0]
    best = math.inf
    for s in SCALE_GRID:
        for n in NOISE_GRID:
            value = neg_log_likelihood(x, y, np.full(dim, s), n)
            if value < best:
                best, scales, noise = value, np.full(dim, s), n
    for _ in range(SEARCH_SWEEPS):
        for j in range(dim):
            for factor in (0.5, 2.0):
                trial = scales.copy()
                trial[j] = min(max(trial[j] * factor, SCALE_BOUNDS[0]), SCALE_BOUNDS[1])
                value = neg_log_likelihood(x, y, trial, noise)
                if value < best:
                    best, scales = value, trial
        for factor in (0.3, 3.0):
            trial_noise = min(max(noise * factor, NOISE_BOUNDS[0]), NOISE_BOUNDS[1])
            value = neg_log_likelihood(x, y, scales, trial_noise)
            if value < best:
                best, noise = value, trial_noise
    return scales, noise


@dataclass(frozen=True)
class GaussianProcess:
    """A fitted model. ``y`` holds the standardised outputs; ``best`` is the lowest of them."""

    x: Array
    y: Array
    scales: Array
    noise: float
    chol: Array
    alpha: Array

    @property
    def best(self) -> float:
        return float(self.y.min())

    @classmethod
    def fit(cls, x: Array, y: Array) -> GaussianProcess:
        """Standardise ``y`` (n >= 2 rows of ``x`` in the unit cube), fit the hyperparameters,
        condition on the data."""
        spread = float(y.std())
        ys = (y - y.mean()) / (spread if spread > 0 else 1.0)
        scales, noise = fit_hyperparameters(x, ys)
        chol = _factor(x, scales, noise)
        if chol is None:  # pragma: no cover - the noise floor keeps the matrix definite
            noise += 1e-3
            chol = _factor(x, scales, noise)
            assert chol is not None
        return cls(x, ys, scales, noise, chol, _solve(chol, ys))

    def predict(self, x: Array) -> tuple[Array, Array]:
        """Posterior mean and standard deviation at the rows of ``x`` (standardised units)."""
        mean, var, _ = self.posterior(x)
        return mean, np.sqrt(var)

    def posterior(self, x: Array) -> tuple[Array, Array, Array]:
        """Mean, variance and ``L^-1 k(data, x)`` (what a covariance between two of the points
        needs: ``k(a, b) - v_a . v_b``) at the rows of ``x``."""
        k = matern52(x, self.x, self.scales)
        v = np.asarray(np.linalg.solve(self.chol, k.T), dtype=np.float64)
        mean: Array = k @ self.alpha
        return mean, np.maximum(1.0 - (v * v).sum(0), 1e-12), v


def kriging_believer(gp: GaussianProcess, candidates: Array, pending: Array, k: int) -> list[int]:
    """Indices of up to ``k`` rows of ``candidates``, picked one at a time by expected
    improvement; every ``pending`` point, then every pick, is believed (taken as observed at
    its predicted mean) before the next pick, so that a batch spreads out.

    Believing a point at its mean leaves the posterior mean unchanged and lowers the variance
    by a rank-one term: a pick costs O((n + picks) x points) instead of a refit."""
    points = np.vstack([pending, candidates]) if len(pending) else candidates
    mean, var, v = gp.posterior(points)
    mean_c = mean[len(pending) :]
    shrink: list[Array] = []  # one column per believed point: its rank-one reduction
    picks: list[int] = []

    def believe(j: int) -> None:
        nonlocal var
        cov = matern52(points, points[j : j + 1], gp.scales)[:, 0] - v.T @ v[:, j]
        for w in shrink:
            cov -= w * w[j]
        w = cov / math.sqrt(var[j] + gp.noise)
        shrink.append(w)
        var = np.maximum(var - w * w, 1e-12)

    for j in range(len(pending)):
        believe(j)
    free = np.ones(len(candidates), dtype=bool)
    while len(picks) < min(k, len(candidates)):
        gain = expected_improvement(mean_c, np.sqrt(var[len(pending) :]), gp.best)
        j = int(np.argmax(np.where(free, gain, -np.inf)))
        free[j] = False
        picks.append(j)
        believe(len(pending) + j)
    return picks


def expected_improvement(mean: Array, sd: Array, best: float) -> Array:
    """E[max(best - f, 0)] for f ~ N(mean, sd^2), elementwise."""
    z = (best - mean) / sd
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in z])
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    out: Array = sd * (z * cdf + pdf)
    return out
