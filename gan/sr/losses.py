"""The super-resolution generator's pixel and perceptual terms (its adversarial term is in gan.losses)."""
from __future__ import annotations

from typing import Callable

import torch

from engine.config import ConfigError

__all__ = ["PIXEL_LOSSES", "pixel_loss", "lpips_loss"]

PIXEL_LOSSES = ("l1", "l2")


def pixel_loss(output: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute (l1) or squared (l2) difference, in float32.

    L1 is the default for SR: it converges to higher PSNR than L2 in practice (Lim et al. 2017,
    EDSR; Zhao et al. 2017), because L2 gives tiny gradients to the small errors that dominate
    once the image is roughly right.
    """
    if output.shape != target.shape:
        raise ValueError(f"pixel_loss: shapes differ: {tuple(output.shape)} vs {tuple(target.shape)}")
    diff = output.float() - target.float()
    if kind == "l1":
        return diff.abs().mean()
    if kind == "l2":
        return diff.pow(2).mean()
    raise ConfigError(f"unknown pixel loss {kind!r}; choose one of {PIXEL_LOSSES}")


def lpips_loss(lpips_model: Callable[..., torch.Tensor], output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean LPIPS distance between images in [-1, 1] (the range the lpips package expects).

    `lpips_model`: a frozen `lpips.LPIPS` from `gan.metrics.lpips_loader.load_lpips`; gradients
    flow to `output` only. Computed in float32 outside autocast (AlexNet features of float16
    inputs lose the small differences the metric measures).
    """
    with torch.autocast(device_type=output.device.type, enabled=False):
        return lpips_model(output.float(), target.float()).mean()
