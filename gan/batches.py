"""The images of a training batch, checked and brought to float [-1, 1], for both GAN families.

A batch is whatever the dataset yields: an image tensor, a dict with an "image" key, or a
tuple/list whose first item is the images (a TensorDataset). Images are (B, C, H, W) or
(B, H, W, C); uint8 0..255 is mapped to [-1, 1]; floats must already be in [-1, 1].
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["batch_images", "to_nchw", "unit_images"]


def batch_images(batch: Any, error: type[Exception], what: str = "images") -> torch.Tensor:
    """The image tensor of `batch` (see the module docstring); `error` for anything else."""
    if isinstance(batch, dict):
        if "image" not in batch:
            raise error(f"a batch dict of {what} needs an 'image' key; got keys {sorted(map(str, batch))}")
        images = batch["image"]
    elif isinstance(batch, (list, tuple)):
        if not batch:
            raise error(f"got an empty batch tuple; expected the {what} first")
        images = batch[0]
    else:
        images = batch
    if not isinstance(images, torch.Tensor):
        raise error(f"expected the {what} as a tensor, got {type(images).__name__}")
    return images


def to_nchw(images: torch.Tensor, shape: tuple[int, int, int], error: type[Exception], mismatch: str) -> torch.Tensor:
    """`images` as (B, C, H, W) of the given (C, H, W) `shape`, channels-last input permuted;
    `error(mismatch.format(got=...))` when they do not fit."""
    if images.ndim == 4 and images.shape[1] != shape[0] and images.shape[-1] == shape[0]:
        images = images.permute(0, 3, 1, 2)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise error(mismatch.format(got=tuple(images.shape)))
    return images


def unit_images(images: torch.Tensor, error: type[Exception], what: str = "images", check_range: bool = True
                ) -> torch.Tensor:
    """uint8 images mapped to float [-1, 1]; float images checked to lie there (once is enough:
    a check every step would synchronise the GPU for nothing)."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0).contiguous()
    if not images.is_floating_point():
        raise error(f"expected uint8 (0..255) or float ([-1, 1]) images, got dtype {images.dtype}")
    images = images.float().contiguous()
    if check_range:
        low, high = (float(v) for v in torch.aminmax(images))
        if low < -1.001 or high > 1.001:
            raise error(f"float {what} must be in [-1, 1], got values in [{low:.3g}, {high:.3g}] "
                        "(uint8 images in 0..255 are converted automatically)")
    return images
