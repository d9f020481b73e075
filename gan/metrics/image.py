"""PSNR and SSIM between image pairs, on RGB or on the luma (Y) channel, as in BasicSR.

Conventions (those of BasicSR's `calculate_psnr` / `calculate_ssim`, which SR papers report):

- Values are compared on the 0..255 scale in float64. uint8 images are used as they are;
  floating-point images must lie in [0, 1] and are multiplied by 255 (a float image outside
  [0, 1], e.g. a tanh output in [-1, 1], is an error rather than a silently wrong number:
  convert it first). Published SR numbers are computed on saved uint8 images, so quantise
  (`gan.metrics.to_uint8(x, (0, 1))`) to reproduce them.
- Y channel: ITU-R BT.601 luma of the RGB image, Y = 16 + (65.481 R + 128.553 G + 24.966 B)
  with R, G, B in [0, 1], i.e. Y in [16, 235] on the 0..255 scale; not rounded (BasicSR's
  `to_y_channel`, also scikit-image's `rgb2ycbcr`).
- crop_border: that many pixels are removed from every side before comparing (SR papers crop
  the scale factor).
- PSNR = 10 log10(255^2 / MSE), MSE over all pixels and channels of one image pair; identical
  images give inf.
- SSIM (Wang et al. 2004): 11 x 11 Gaussian window with sigma 1.5, C1 = (0.01 * 255)^2,
  C2 = (0.03 * 255)^2, population (not sample) statistics, averaged over the "valid" region
  (5 pixels in from each side) and then over channels. Equal to scikit-image's
  `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255)`.

Layout: numpy arrays are (H, W, C) or (N, H, W, C); torch tensors are (C, H, W) or
(N, C, H, W), with C = 3 (RGB) or 1. One image pair gives a float, a batch an (N,) array.
Computation is in torch (float64) on the input's device.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from gan.metrics.batch import ImageBatchError

__all__ = ["psnr", "rgb_to_y", "ssim"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
_DATA_RANGE = 255.0
_FLOAT_TOLERANCE = 1e-6


def _to_nchw_255(images, what: str) -> tuple[torch.Tensor, bool]:
    """float64 (N, C, H, W) on the 0..255 scale, and whether the input was a single image."""
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ImageBatchError(f"{what}: a numpy image must be (H, W, C) or (N, H, W, C), got shape {images.shape}")
        single = images.ndim == 3
        tensor = torch.from_numpy(np.ascontiguousarray(images[None] if single else images)).permute(0, 3, 1, 2)
    elif isinstance(images, torch.Tensor):
        if images.dim() not in (3, 4):
            raise ImageBatchError(f"{what}: a torch image must be (C, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")
        single = images.dim() == 3
        tensor = images.detach()[None] if single else images.detach()
    else:
        raise ImageBatchError(f"{what}: expected a numpy array or a torch tensor, got {type(images).__name__}")
    if tensor.shape[1] not in (1, 3):
        raise ImageBatchError(f"{what}: expected 1 or 3 channels, got shape {tuple(tensor.shape)} (N, C, H, W)")
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float64), single
    if not tensor.is_floating_point():
        raise ImageBatchError(f"{what}: expected uint8 or floating-point images, got {tensor.dtype}")
    tensor = tensor.to(torch.float64)
    low, high = float(tensor.min()), float(tensor.max())
    if low < -_FLOAT_TOLERANCE or high > 1 + _FLOAT_TOLERANCE or not math.isfinite(low + high):
        raise ImageBatchError(
            f"{what}: floating-point images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]; "
            "pass uint8, or rescale (a tanh output x in [-1, 1]: (x + 1) / 2)"
        )
    return tensor * _DATA_RANGE, single


def _luma(images: torch.Tensor) -> torch.Tensor:
    # images: (N, 3, H, W) on 0..255 -> (N, 1, H, W) Y on 16..235
    weights = torch.tensor(_Y_WEIGHTS, dtype=images.dtype, device=images.device) / _DATA_RANGE
    return (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True) + 16.0


def rgb_to_y(images):
    """BT.601 luma of RGB images on the 0..255 scale (Y in [16, 235]), float64, same layout minus C.

    numpy (H, W, 3) / (N, H, W, 3) -> (H, W) / (N, H, W) numpy; torch (3, H, W) /
    (N, 3, H, W) -> (H, W) / (N, H, W) tensor.
    """
    tensor, single = _to_nchw_255(images, "rgb_to_y")
    if tensor.shape[1] != 3:
        raise ImageBatchError(f"rgb_to_y: expected RGB images, got {tensor.shape[1]} channel(s)")
    y = _luma(tensor)[:, 0]
    y = y[0] if single else y
    return y.cpu().numpy() if isinstance(images, np.ndarray) else y


def _prepare_pair(a, b, crop_border: int, y_channel: bool, what: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    x, single_a = _to_nchw_255(a, f"{what}: first image")
    y, single_b = _to_nchw_255(b, f"{what}: second image")
    if x.shape != y.shape:
        raise ImageBatchError(f"{what}: images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)} (N, C, H, W)")
    if crop_border < 0:
        raise ValueError(f"{what}: crop_border must be >= 0, got {crop_border}")
    if y_channel:
        if x.shape[1] != 3:
            raise ImageBatchError(f"{what}: y_channel=True needs RGB images, got {x.shape[1]} channel(s)")
        x, y = _luma(x), _luma(y.to(x.device))
    if crop_border:
        if 2 * crop_border >= min(x.shape[-2:]):
            raise ValueError(f"{what}: crop_border {crop_border} removes the whole {x.shape[-2]}x{x.shape[-1]} image")
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    return x, y.to(x.device), single_a and single_b


def _result(values: torch.Tensor, single: bool):
    values = values.cpu().numpy()
    return float(values[0]) if single else values


def psnr(a, b, crop_border: int = 0, y_channel: bool = False):
    """PSNR in dB between image(s) a and b (module docstring for conventions)."""
    x, y, single = _prepare_pair(a, b, crop_border, y_channel, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    values = 10.0 * torch.log10(_DATA_RANGE**2 / mse)  # mse == 0 -> inf, as scikit-image
    return _result(values, single)


def _gaussian_window(device: torch.device) -> torch.Tensor:
    coords = torch.arange(_SSIM_WINDOW, dtype=torch.float64, device=device) - (_SSIM_WINDOW - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * _SSIM_SIGMA**2))
    return kernel / kernel.sum()


def _filter_valid(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    # Separable Gaussian, no padding: the SSIM map covers only where the window fits.
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(images, horizontal, groups=channels), vertical, groups=channels)


def ssim(a, b, crop_border: int = 0, y_channel: bool = False):
    """SSIM between image(s) a and b, averaged over channels (module docstring)."""
    x, y, single = _prepare_pair(a, b, crop_border, y_channel, "ssim")
    if min(x.shape[-2:]) < _SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {_SSIM_WINDOW}x{_SSIM_WINDOW} after cropping, "
                         f"got {x.shape[-2]}x{x.shape[-1]}")
    kernel = _gaussian_window(x.device)
    c1 = (_K1 * _DATA_RANGE) ** 2
    c2 = (_K2 * _DATA_RANGE) ** 2
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    var_x = _filter_valid(x * x, kernel) - mu_x**2
    var_y = _filter_valid(y * y, kernel) - mu_y**2
    cov = _filter_valid(x * y, kernel) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    per_channel = ssim_map.flatten(2).mean(dim=2)
    return _result(per_channel.mean(dim=1), single)
