"""Image batches as the metrics take them, and the conversions into that form.

Layout rule, used by every metric in `gan.metrics`: a **numpy** array is channels-last
(H, W, 3) or (N, H, W, 3), as `data_prep.images.load_rgb` returns; a **torch** tensor is
channels-first (3, H, W) or (N, 3, H, W), as models produce. The rule goes by type, not by
guessing from the shape, because a 3-pixel-wide image would make any shape guess wrong.

The feature-space metrics (FID, KID, FD-face) take uint8 images only: a float image has no
single meaning (0..1, -1..1 or 0..255), and quantising to uint8 is what saving the samples to
disk does anyway, so a number computed in memory equals one computed from the saved files.
`to_uint8` converts generator outputs explicitly.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.errors import FaceganError

__all__ = ["ImageBatchError", "as_uint8_nchw", "as_uint8_nhwc", "to_uint8"]


class ImageBatchError(FaceganError, ValueError):
    """An image batch has the wrong type, dtype, shape or value range."""


def _describe(images) -> str:
    shape = tuple(getattr(images, "shape", ()))
    dtype = getattr(images, "dtype", type(images).__name__)
    return f"{type(images).__module__}.{type(images).__name__} of shape {shape} and dtype {dtype}"


def as_uint8_nchw(images, what: str = "images") -> torch.Tensor:
    """(N, 3, H, W) uint8 CPU-or-device tensor from a numpy NHWC/HWC or torch NCHW/CHW uint8 batch."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ImageBatchError(
                f"{what}: expected uint8 images, got {_describe(images)}; convert with gan.metrics.to_uint8"
            )
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ImageBatchError(f"{what}: a numpy batch must be (N, H, W, 3) RGB, got {_describe(images)}")
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise ImageBatchError(
                f"{what}: expected uint8 images, got {_describe(images)}; convert with gan.metrics.to_uint8"
            )
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ImageBatchError(f"{what}: a torch batch must be (N, 3, H, W) RGB, got {_describe(images)}")
        return images
    raise ImageBatchError(f"{what}: expected a numpy array or a torch tensor, got {type(images).__name__}")


def as_uint8_nhwc(images, what: str = "images") -> np.ndarray:
    """(N, H, W, 3) contiguous uint8 numpy array, from the same inputs as `as_uint8_nchw`."""
    batch = as_uint8_nchw(images, what)
    return np.ascontiguousarray(batch.permute(0, 2, 3, 1).cpu().numpy())


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Float images in `value_range` (a tanh generator's (-1, 1) by default) -> uint8, rounded.

    Values outside the range are clipped, as saving an image would; the layout is kept.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ImageBatchError(f"to_uint8: expected a floating-point tensor, got {_describe(images)}")
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise ImageBatchError(f"to_uint8: value_range must be (low, high) with high > low, got {value_range}")
    scaled = (images.detach().float() - low) * (255.0 / (high - low))
    return scaled.round_().clamp_(0, 255).to(torch.uint8)
