"""Image transforms that more than one family uses, each written once.

- value ranges: `to_unit_range` (0..255 -> [-1, 1]) and `to_uint8_range` (back, unrounded);
- `resize_images`: antialiased bicubic resizing of a float batch;
- `gaussian_blur`: a separable Gaussian with one sigma per image, reflect padding;
- `jpeg_round_trip`: encode and decode through libjpeg (Pillow), as a saved photo would be;
- `jitter_colour`: brightness, contrast and saturation factors, in torchvision's order;
- `RandomHorizontalFlip`: a resumable random mirror for training datasets.

The SR degradation (`data_prep.degrade`), the attribute models' augmentation, the synthetic
faces and the cross-domain study's augmented face sets are built from these.
"""
from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from data_prep.images import luma

__all__ = [
    "to_unit_range",
    "to_uint8_range",
    "resize_images",
    "gaussian_kernels",
    "gaussian_blur",
    "jpeg_round_trip",
    "jitter_colour",
    "RandomHorizontalFlip",
]


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 (or float on that scale) -> float in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_uint8_range(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> float on 0..255 (not rounded, not clipped)."""
    return (images.float() + 1.0) * 127.5


def resize_images(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of a (B, C, H, W) float batch (any scale, either way).

    Antialiasing widens the filter when shrinking (as PIL does), so detail above the new
    Nyquist frequency is removed instead of aliased; when enlarging it changes nothing.
    """
    if isinstance(size, int):
        size = (size, size)
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)


def gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2r+1) normalised 1-d Gaussians, one per sigma; sigma 0 gives a delta (no blur)."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    safe = sigmas.double().clamp_min(1e-6)[:, None]
    kernels = torch.exp(-(x[None] ** 2) / (2 * safe**2))
    kernels = torch.where(sigmas[:, None] > 0, kernels, (x[None] == 0).double())
    return (kernels / kernels.sum(dim=1, keepdim=True)).float()


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor | Sequence[float], radius: int | None = None) -> torch.Tensor:
    """Blur each image of a (B, C, H, W) float batch with its own sigma (pixels), reflect padding.

    `radius` (taps each side) defaults to ceil(3 * the largest sigma). Give it from a fixed
    bound when an image's result must not depend on which other images share its batch.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    if not bool((sigmas > 0).any()):
        return images
    b, c, h, w = images.shape
    if radius is None:
        radius = int(math.ceil(3.0 * float(sigmas.max())))
    radius = min(max(1, radius), min(h, w) - 1)  # reflect padding needs pad < size
    kernels = gaussian_kernels(sigmas, radius).to(images.device)  # (B, K)
    k = kernels.repeat_interleave(c, dim=0)  # (B*C, K): one kernel per image and channel
    x = images.reshape(1, b * c, h, w)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(x, k.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, h, w)


def jpeg_round_trip(image: np.ndarray, quality: int, subsampling: int | None = 2) -> np.ndarray:
    """An (H, W, 3) uint8 image after JPEG encoding at `quality` and decoding. `subsampling`:
    Pillow's chroma subsampling (2: 4:2:0, as most cameras and the web; 0: none); None leaves
    libjpeg's default."""
    from PIL import Image

    options = {"quality": int(quality)}
    if subsampling is not None:
        options["subsampling"] = subsampling
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def jitter_colour(images: torch.Tensor, brightness, contrast, saturation, *, black: float = 0.0,
                  clamp: tuple[float, float] | None = None, contrast_pivot: str = "luma") -> torch.Tensor:
    """Scale brightness, contrast and saturation by the given factors, in that order (as
    torchvision's ColorJitter does), on (3, H, W) or (B, 3, H, W) float images.

    Factors are numbers or tensors that broadcast against the images ((B, 1, 1, 1) for one per
    image). `black` is the value brightness scales towards (0 on 0..255, -1 on [-1, 1]);
    `clamp` bounds the values after each step (torchvision's behaviour), None leaves them.
    `contrast_pivot` is what contrast scales about: "luma", each image's mean BT.601 luma (as
    torchvision), or "mean", the mean of all its values.
    """
    def bounded(x: torch.Tensor) -> torch.Tensor:
        return x.clamp(*clamp) if clamp is not None else x

    x = bounded((images - black) * brightness + black)
    if contrast_pivot == "luma":
        pivot = luma(x).mean(dim=(-2, -1), keepdim=True)
    elif contrast_pivot == "mean":
        pivot = x.mean(dim=(-3, -2, -1), keepdim=True)
    else:
        raise ValueError(f"contrast_pivot must be 'luma' or 'mean', not {contrast_pivot!r}")
    x = bounded((x - pivot) * contrast + pivot)
    grey = luma(x)
    return bounded((x - grey) * saturation + grey)


class RandomHorizontalFlip:
    """Flip a CxHxW image with probability 1/2, drawing from torch's global RNG so that the
    Trainer's RNG capture makes a resumed run flip exactly as an uninterrupted one."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(-1) if torch.rand(()) < 0.5 else image
