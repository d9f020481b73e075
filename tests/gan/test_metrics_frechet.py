"""Fréchet distance and KID against hand-computed values, scipy and torch-fidelity."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from gan.metrics.frechet import (
    FeatureError,
    FeatureStatistics,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    kernel_distance,
    mmd2_unbiased,
    polynomial_kernel,
    sqrtm_psd,
    trace_sqrt_product,
)


def _random_spd(rng, dim, rank=None):
    rank = dim if rank is None else rank
    factor = rng.normal(size=(dim, rank))
    return factor @ factor.T / rank + (1e-3 * np.eye(dim) if rank == dim else 0)


def test_frechet_1d_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 2.0, size=(500, 1))
    b = rng.normal(-0.5, 0.7, size=(300, 1))
    mu1, mu2 = a.mean(), b.mean()
    s1, s2 = a.std(ddof=1), b.std(ddof=1)
    expected = (mu1 - mu2) ** 2 + s1**2 + s2**2 - 2 * s1 * s2
    assert frechet_distance_from_features(a, b) == pytest.approx(expected, rel=1e-12)


def test_frechet_diagonal_gaussians_by_hand():
    # For diagonal covariances FD = |mu1 - mu2|^2 + sum_i (s1_i - s2_i)^2.
    s1 = FeatureStatistics(np.array([0.0, 1.0, 2.0]), np.diag([4.0, 1.0, 9.0]), 10)
    s2 = FeatureStatistics(np.array([1.0, 1.0, 0.0]), np.diag([1.0, 1.0, 1.0]), 10)
    expected = (1 + 0 + 4) + ((2 - 1) ** 2 + 0 + (3 - 1) ** 2)
    assert frechet_distance(s1, s2) == pytest.approx(expected, abs=1e-12)


def test_frechet_identical_sets_is_zero_and_symmetric():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 32))
    b = rng.normal(0.3, 1.5, size=(400, 32))
    assert frechet_distance_from_features(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance_from_features(a, b) == pytest.approx(frechet_distance_from_features(b, a), rel=1e-10)
    assert frechet_distance_from_features(a, b) > 1.0


@pytest.mark.parametrize("dim", [2, 7, 64])
def test_sqrt_against_scipy_on_random_spd(dim):
    rng = np.random.default_rng(dim)
    s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim)
    root = sqrtm_psd(s1)
    np.testing.assert_allclose(root, scipy.linalg.sqrtm(s1).real, atol=1e-9)
    np.testing.assert_allclose(root @ root, s1, atol=1e-9)
    expected = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-9)


def test_singular_covariances_stay_finite_and_match_eps_fallback_limit():
    # Fewer samples than dimensions: both covariances are singular. The usual fallback adds
    # eps to the diagonals before scipy's sqrtm, which biases tr sqrt by ~sqrt(eps) per null
    # direction; as eps -> 0 it must approach our eps-free value, which equals the sum of
    # square roots of the eigenvalues of S1 S2 (torch-fidelity's formula).
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 50)), rng.normal(0.2, 1.0, size=(25, 50))
    fd = frechet_distance_from_features(a, b)
    assert np.isfinite(fd) and fd > 0
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ours = trace_sqrt_product(s1, s2)
    eigen = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real)
    assert ours == pytest.approx(eigen, rel=1e-7)
    gaps = []
    for eps in (1e-6, 1e-8, 1e-10):
        regularised = np.trace(scipy.linalg.sqrtm((s1 + eps * np.eye(50)) @ (s2 + eps * np.eye(50)))).real
        gaps.append(abs(regularised - ours))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-4 * ours


def test_frechet_matches_torch_fidelity():
    torch = pytest.importorskip("torch")
    metric_fid = pytest.importorskip("torch_fidelity.metric_fid")
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(300, 16)), rng.normal(0.1, 1.2, size=(200, 16))
    stat = [metric_fid.fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b)]
    expected = metric_fid.fid_statistics_to_metric(stat[0], stat[1], verbose=False)["frechet_inception_distance"]
    assert frechet_distance_from_features(a, b) == pytest.approx(expected, rel=1e-9)


def test_statistics_save_load_roundtrip(tmp_path):
    stats = feature_statistics(np.random.default_rng(5).normal(size=(30, 4)))
    stats.save(tmp_path / "ref.npz")
    loaded = FeatureStatistics.load(tmp_path / "ref.npz")
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.num_samples == 30
    (tmp_path / "bad.npz").write_bytes(b"not numpy")
    with pytest.raises(FeatureError, match="bad.npz"):
        FeatureStatistics.load(tmp_path / "bad.npz")


def test_mmd2_by_hand():
    # x = {0, 1}, y = {1, 2}, d = 1, k(u, v) = (uv + 1)^3:
    # K_xx off-diagonal 1 + 1 -> 2 / 2 = 1; K_yy off-diagonal 27 + 27 -> 54 / 2 = 27;
    # K_xy = 1 + 1 + 8 + 27 = 37 -> 2 * 37 / 4 = 18.5; MMD^2 = 1 + 27 - 18.5 = 9.5.
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    k = polynomial_kernel
    assert mmd2_unbiased(k(x, x), k(x, y), k(y, y)) == pytest.approx(9.5)
    # A subset of 2 out of 2 is the whole set, whatever the order.
    kd = kernel_distance(x, y, n_subsets=3, subset_size=2)
    assert kd.mean == pytest.approx(9.5) and kd.std == pytest.approx(0.0, abs=1e-12)


def test_kid_identical_near_zero_and_shift_positive():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same = kernel_distance(a, b, n_subsets=20, subset_size=200)
    shifted = kernel_distance(a, b + 0.5, n_subsets=20, subset_size=200)
    more = kernel_distance(a, b + 1.0, n_subsets=20, subset_size=200)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert shifted.mean > 10 * max(same.std, 1e-6)
    assert more.mean > shifted.mean


def test_kid_matches_torch_fidelity():
    torch = pytest.importorskip("torch")
    metric_kid = pytest.importorskip("torch_fidelity.metric_kid")
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(120, 10)), rng.normal(0.2, 1.0, size=(150, 10))
    expected = metric_kid.kid_features_to_metric(
        torch.from_numpy(a), torch.from_numpy(b), kid_subsets=10, kid_subset_size=50, rng_seed=2020, verbose=False
    )
    ours = kernel_distance(a, b, n_subsets=10, subset_size=50, seed=2020)
    assert ours.mean == pytest.approx(expected["kernel_inception_distance_mean"], rel=1e-10)
    assert ours.std == pytest.approx(expected["kernel_inception_distance_std"], rel=1e-8)


def test_bad_features_are_named_errors():
    a = np.random.default_rng(8).normal(size=(10, 3))
    with pytest.raises(FeatureError, match="subset_size 20 exceeds"):
        kernel_distance(a, a, subset_size=20)
    assert kernel_distance(a, a, n_subsets=2, subset_size=None).subset_size == 10
    bad = a.copy()
    bad[2, 1] = np.nan
    with pytest.raises(FeatureError, match="1 of 10 feature rows"):
        frechet_distance_from_features(a, bad)
    with pytest.raises(FeatureError, match="feature sizes differ"):
        frechet_distance_from_features(a, a[:, :2])
    with pytest.raises(FeatureError, match="at least 2 samples"):
        feature_statistics(a[:1])
