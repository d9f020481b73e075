"""PSNR / SSIM against scikit-image on a real photograph (skimage.data.astronaut)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan.metrics import ImageBatchError, psnr, rgb_to_y, ssim

skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (test extra) is not installed")
skimage_color = pytest.importorskip("skimage.color")


@pytest.fixture(scope="module")
def photo_pair(astronaut_rgb):
    clean = astronaut_rgb[100:292, 150:342]  # 192 x 192, the face
    rng = np.random.default_rng(0)
    noisy = np.clip(clean.astype(np.float64) + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    return clean, noisy


def _sk_ssim(a, b, channel_axis=-1):
    return skimage_metrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=channel_axis
    )


@pytest.mark.parametrize("crop", [0, 4])
def test_rgb_psnr_ssim_match_skimage(photo_pair, crop):
    clean, noisy = photo_pair
    ref_a = clean[crop : clean.shape[0] - crop, crop : clean.shape[1] - crop] if crop else clean
    ref_b = noisy[crop : noisy.shape[0] - crop, crop : noisy.shape[1] - crop] if crop else noisy
    expected_psnr = skimage_metrics.peak_signal_noise_ratio(ref_a, ref_b, data_range=255)
    assert psnr(clean, noisy, crop_border=crop) == pytest.approx(expected_psnr, abs=1e-6)
    assert ssim(clean, noisy, crop_border=crop) == pytest.approx(_sk_ssim(ref_a, ref_b), abs=1e-6)
    assert 20 < expected_psnr < 35  # a real, non-trivial comparison


def test_y_channel_matches_skimage_ycbcr(photo_pair):
    clean, noisy = photo_pair
    y_clean, y_noisy = skimage_color.rgb2ycbcr(clean)[..., 0], skimage_color.rgb2ycbcr(noisy)[..., 0]
    np.testing.assert_allclose(rgb_to_y(clean), y_clean, atol=1e-9)
    assert y_clean.min() >= 16 and y_clean.max() <= 235
    crop = 4
    ya, yb = y_clean[crop:-crop, crop:-crop], y_noisy[crop:-crop, crop:-crop]
    expected_psnr = skimage_metrics.peak_signal_noise_ratio(ya, yb, data_range=255)
    expected_ssim = _sk_ssim(ya, yb, channel_axis=None)
    assert psnr(clean, noisy, crop_border=crop, y_channel=True) == pytest.approx(expected_psnr, abs=1e-6)
    assert ssim(clean, noisy, crop_border=crop, y_channel=True) == pytest.approx(expected_ssim, abs=1e-6)
    # Y discards chroma noise, so it scores higher than RGB for the same noisy image
    assert psnr(clean, noisy, y_channel=True) > psnr(clean, noisy)


def test_float_torch_batch_equals_uint8_numpy(photo_pair):
    clean, noisy = photo_pair
    a = torch.from_numpy(np.stack([clean, noisy])).permute(0, 3, 1, 2).float() / 255
    b = torch.from_numpy(np.stack([noisy, noisy])).permute(0, 3, 1, 2).float() / 255
    p, s = psnr(a, b, y_channel=True), ssim(a, b)
    assert p.shape == (2,) and s.shape == (2,)
    assert p[0] == pytest.approx(psnr(clean, noisy, y_channel=True), abs=1e-6)
    assert s[0] == pytest.approx(ssim(clean, noisy), abs=1e-4)
    assert np.isinf(p[1]) and s[1] == pytest.approx(1.0)


def test_more_noise_scores_worse(photo_pair):
    clean, _ = photo_pair
    rng = np.random.default_rng(1)
    scores = []
    for sigma in (2, 8, 24):
        noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
        scores.append((psnr(clean, noisy), ssim(clean, noisy)))
    assert scores[0][0] > scores[1][0] > scores[2][0]
    assert scores[0][1] > scores[1][1] > scores[2][1]


def test_bad_inputs_are_clear_errors(photo_pair):
    clean, noisy = photo_pair
    tanh_like = torch.rand(1, 3, 32, 32) * 2 - 1
    with pytest.raises(ImageBatchError, match=r"must lie in \[0, 1\].*\(x \+ 1\) / 2"):
        psnr(tanh_like, tanh_like)
    with pytest.raises(ImageBatchError, match="differ in shape"):
        ssim(clean, noisy[:100])
    with pytest.raises(ValueError, match="crop_border 96 removes"):
        psnr(clean, noisy, crop_border=96)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(clean[:12, :12], noisy[:12, :12], crop_border=1)
