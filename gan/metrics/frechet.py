"""Fréchet distance between Gaussians fitted to feature sets, and the kernel distance (KID).

Fréchet distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule"; FID when
the features are Inception pool3): with means mu1, mu2 and covariances S1, S2,

    FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

The matrix square root. S1 S2 is not symmetric, and `scipy.linalg.sqrtm` of it can return
complex values or fail when the covariances are singular (fewer samples than dimensions, dead
features); the usual fix adds eps to the diagonals and retries. We use the symmetric form
instead: S1 S2 = S1^(1/2) (S1^(1/2) S2 S1^(1/2)) S1^(-1/2) is similar to the symmetric PSD
matrix M = S1^(1/2) S2 S1^(1/2), so tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(M)). Both roots come
from `numpy.linalg.eigh` (symmetric eigensolver, always real), and eigenvalues that rounding
pushes slightly below zero are clipped to zero. It needs no eps, works for singular
covariances, and agrees with scipy's sqrtm wherever sqrtm succeeds (tested).

KID (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimate of the squared
MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over `n_subsets`
random subsets of `subset_size` samples from each set; the spread over subsets is reported as
the std. Defaults and the subset sampling (numpy RandomState(seed).choice without replacement,
real subset then fake subset) follow torch-fidelity 0.4.0, so numbers are comparable with it.
All arithmetic is float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import FaceganError

__all__ = [
    "FeatureError",
    "FeatureStatistics",
    "KernelDistance",
    "as_features",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "kernel_distance",
    "mmd2_unbiased",
    "polynomial_kernel",
    "sqrtm_psd",
    "trace_sqrt_product",
]

# torch-fidelity's defaults (kid_subsets, kid_subset_size, rng_seed)
DEFAULT_KID_SUBSETS = 100
DEFAULT_KID_SUBSET_SIZE = 1000
DEFAULT_SEED = 2020


class FeatureError(FaceganError, ValueError):
    """Feature arrays that cannot give a distance: wrong shape, too few samples, NaN/inf."""


def as_features(features, what: str = "features", min_samples: int = 2) -> np.ndarray:
    """(N, D) float64 numpy array from a numpy array or torch tensor, checked."""
    if hasattr(features, "detach"):  # torch tensor; avoids importing torch for numpy users
        features = features.detach().cpu().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise FeatureError(f"{what}: expected an (N, D) array, got shape {array.shape}")
    if array.shape[0] < min_samples:
        raise FeatureError(f"{what}: need at least {min_samples} samples, got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(array), axis=1)))
        raise FeatureError(f"{what}: {bad} of {array.shape[0]} feature rows contain NaN or inf")
    return array


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean (D,) and covariance (D, D) of N feature vectors; what FID reference files store."""

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int

    def __post_init__(self) -> None:
        mu = np.asarray(self.mu, dtype=np.float64)
        sigma = np.asarray(self.sigma, dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise FeatureError(f"statistics: mu must be (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)

    def save(self, path) -> None:
        """Write an .npz (mu, sigma, num_samples) atomically, for reuse as a reference."""
        import io

        from engine.checkpoint import atomic_write_bytes

        buffer = io.BytesIO()
        np.savez(buffer, mu=self.mu, sigma=self.sigma, num_samples=np.int64(self.num_samples))
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path) -> "FeatureStatistics":
        try:
            with np.load(path) as data:
                return cls(data["mu"], data["sigma"], int(data["num_samples"]))
        except (OSError, KeyError, ValueError) as error:
            raise FeatureError(f"{path}: not a feature-statistics file written by FeatureStatistics.save ({error})") from None


def feature_statistics(features, what: str = "features") -> FeatureStatistics:
    """Mean and unbiased (N - 1) covariance of (N, D) features, like numpy.cov and torch-fidelity."""
    array = as_features(features, what)
    return FeatureStatistics(array.mean(axis=0), np.cov(array, rowvar=False).reshape(array.shape[1], -1), array.shape[0])


def _symmetric_eig(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Symmetrise first: covariances and products computed in floating point are symmetric
    # only up to rounding, and eigh reads just one triangle.
    values, vectors = np.linalg.eigh((matrix + matrix.T) * 0.5)
    return np.clip(values, 0.0, None), vectors


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric positive semi-definite matrix (via eigh).

    Eigenvalues below zero (rounding in a PSD matrix) are clipped to zero; the result is
    symmetric PSD with result @ result == matrix up to rounding.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise FeatureError(f"sqrtm_psd: expected a square matrix, got shape {matrix.shape}")
    values, vectors = _symmetric_eig(matrix)
    return (vectors * np.sqrt(values)) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) for PSD sigma1, sigma2, via the symmetric form (module docstring)."""
    root1 = sqrtm_psd(sigma1)
    values, _ = _symmetric_eig(root1 @ np.asarray(sigma2, dtype=np.float64) @ root1)
    return float(np.sqrt(values).sum())


def frechet_distance(stats1: FeatureStatistics, stats2: FeatureStatistics) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); >= 0 up to rounding."""
    if stats1.mu.shape != stats2.mu.shape:
        raise FeatureError(f"frechet_distance: feature sizes differ ({stats1.mu.shape[0]} vs {stats2.mu.shape[0]})")
    diff = stats1.mu - stats2.mu
    value = (
        float(diff @ diff)
        + float(np.trace(stats1.sigma))
        + float(np.trace(stats2.sigma))
        - 2.0 * trace_sqrt_product(stats1.sigma, stats2.sigma)
    )
    # Identical inputs give a rounding residue of either sign; a distance is never negative.
    return max(value, 0.0)


def frechet_distance_from_features(features1, features2) -> float:
    """`frechet_distance` of Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance(feature_statistics(features1, "features1"), feature_statistics(features2, "features2"))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (gamma x.y + coef0)^degree with gamma = 1/d by default: KID's kernel."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD^2 from m x m kernel matrices (Gretton et al. 2012, eq. 3; as torch-fidelity).

    Within-set sums leave out the diagonal (k(x_i, x_i)) and divide by m(m - 1); the cross
    term keeps all m^2 pairs. The estimate can be slightly negative when the sets match.
    """
    m = k_xx.shape[0]
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


@dataclass(frozen=True)
class KernelDistance:
    """KID: mean and std of the unbiased MMD^2 over subsets, and how it was sampled."""

    mean: float
    std: float
    n_subsets: int
    subset_size: int
    seed: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n_subsets": self.n_subsets, "subset_size": self.subset_size, "seed": self.seed}


def kernel_distance(
    features1,
    features2,
    n_subsets: int = DEFAULT_KID_SUBSETS,
    subset_size: int | None = DEFAULT_KID_SUBSET_SIZE,
    seed: int = DEFAULT_SEED,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> KernelDistance:
    """KID between two (N, D) feature sets (module docstring).

    subset_size: samples per subset from each set; None means min(1000, N1, N2). A size larger
    than either set is an error rather than a silent cap, since KID's bias and variance depend
    on it and a reported number must say which was used.
    """
    x = as_features(features1, "features1")
    y = as_features(features2, "features2")
    if x.shape[1] != y.shape[1]:
        raise FeatureError(f"kernel_distance: feature sizes differ ({x.shape[1]} vs {y.shape[1]})")
    if subset_size is None:
        subset_size = min(DEFAULT_KID_SUBSET_SIZE, x.shape[0], y.shape[0])
    if subset_size < 2:
        raise FeatureError(f"kernel_distance: subset_size must be >= 2, got {subset_size}")
    if subset_size > min(x.shape[0], y.shape[0]):
        raise FeatureError(
            f"kernel_distance: subset_size {subset_size} exceeds the number of samples "
            f"(real {x.shape[0]}, fake {y.shape[0]}); pass a smaller kid_subset_size or more samples"
        )
    if n_subsets < 1:
        raise FeatureError(f"kernel_distance: n_subsets must be >= 1, got {n_subsets}")

    def kernel(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return polynomial_kernel(u, v, degree=degree, gamma=gamma, coef0=coef0)

    rng = np.random.RandomState(seed)
    values = np.empty(n_subsets)
    for i in range(n_subsets):
        a = x[rng.choice(x.shape[0], subset_size, replace=False)]
        b = y[rng.choice(y.shape[0], subset_size, replace=False)]
        values[i] = mmd2_unbiased(kernel(a, a), kernel(a, b), kernel(b, b))
    return KernelDistance(float(values.mean()), float(values.std()), n_subsets, subset_size, seed)
