"""Using a trained SR generator: load it from a checkpoint, super-resolve batches, show strips."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.checkpoint import load_checkpoint, module_weights
from engine.config import from_dict
from engine.errors import FaceganError
from engine.modes import eval_mode
from gan.sr.config import SRConfig
from gan.sr.models import SRGenerator, build_sr_generator

__all__ = ["LoadedSR", "load_sr_checkpoint", "super_resolve", "make_strips", "lr_from_image"]


@torch.no_grad()
def super_resolve(generator: nn.Module, lr: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """SR images in [-1, 1] (clamped) of LR images in [-1, 1], in eval mode, batch by batch."""
    device = next(generator.parameters()).device
    with eval_mode(generator):
        return torch.cat([generator(chunk.to(device)).float().clamp(-1.0, 1.0) for chunk in lr.split(batch_size)])


def make_strips(lr: torch.Tensor, bicubic: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """(4N, C, H, W): per face LR (nearest, to HR size) | bicubic | SR | HR, face after face."""
    size = hr.shape[-2:]
    lr_big = torch.nn.functional.interpolate(lr.float(), size=size, mode="nearest")
    return torch.stack([lr_big, bicubic.float(), sr.float(), hr.float()], dim=1).flatten(0, 1)


def lr_from_image(image: np.ndarray, lr_size: int) -> torch.Tensor:
    """HxWx3 uint8 -> 3 x lr_size x lr_size uint8: centre square crop, antialiased bicubic resize."""
    from data_prep.transforms import resize_images

    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(image[top:top + side, left:left + side])).permute(2, 0, 1)
    if side == lr_size:
        return square.contiguous()
    resized = resize_images(square[None].float(), lr_size)[0]
    return resized.clamp_(0, 255).round_().to(torch.uint8)


@dataclass
class LoadedSR:
    """A trained SR generator (eval mode) with the config it was trained with."""

    generator: SRGenerator
    config: SRConfig
    run_config: dict
    step: int
    path: Path
    ema: bool

    @property
    def scale(self) -> int:
        return self.config.model.scale

    @property
    def input_size(self) -> int:
        return self.config.model.input_size

    @property
    def output_size(self) -> int:
        return self.config.model.output_size


def load_sr_checkpoint(checkpoint: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> LoadedSR:
    """Rebuild the generator of a `facegan sr train` checkpoint (its EMA weights when kept)."""
    path = Path(checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    run = state.get("run_config") or {}
    if "sr" not in run:
        raise FaceganError(f"{path} is not a facegan SR checkpoint (no sr config inside)")
    config = from_dict(SRConfig, run["sr"])
    generator = build_sr_generator(config.model)
    weights, used_ema = module_weights(state, "generator", use_ema, path)
    generator.load_state_dict(weights)
    generator.to(device).eval()
    return LoadedSR(generator, config, run, int(state.get("global_step", 0)), path, used_ema)
