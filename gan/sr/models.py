"""The face super-resolution generator (TRGAN, Yu 2017, sec. 4.3) and its critic.

Three residual block kinds, each a sum of a branch and a skip:

- `CommonBlock`: branch = BN -> conv3x3 -> BN -> act -> conv3x3; skip = identity.
- `UpBlock`: branch = conv3x3 -> pixel shuffle x2 -> BN -> act -> conv3x3; skip = bilinear x2
  -> conv1x1. The feature map doubles in size.
- `DownBlock`: the common block with 2x2 average pooling (stride 2) at the end of both
  branches (and a conv1x1 on the skip when the width changes). The feature map halves.

The thesis lists BN -> conv -> BN -> conv; one nonlinearity sits after the second BN, as in
EDSR's conv -> ReLU -> conv block: a block with no nonlinearity would be linear, one before
the first conv would clip the trunk features. `norm="none"` drops the BNs (for ablations).

`SRGenerator` works at the input (LR) resolution for as long as possible and upsamples late,
which keeps a CPU step cheap: stem conv -> optional hourglass (down blocks, saved skips) ->
common blocks -> (up blocks back to the LR size, adding the skips) -> a long skip from the
stem -> log2(scale) up blocks, halving the width each time down to `min_channels` -> act ->
conv3x3 to RGB. With `residual="bicubic"` the network predicts a correction to the bicubic
upsampling of its input (output = bicubic(LR) + net(LR)), so at initialisation it already
equals the bicubic baseline and all its capacity goes to the missing detail; this is the
sample-efficient choice (VDSR, Kim et al. 2016) and the default. Images are in [-1, 1].

`SRCritic` scores HR-sized images for the adversarial term: stem conv -> down blocks to 4x4
(widths doubling up to 8x) -> act -> linear. Its blocks use layer normalisation (or none):
the WGAN gradient penalty is a per-sample constraint that BatchNorm would break.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


__all__ = [
    "SR_NORMS",
    "SR_ACTIVATIONS",
    "CommonBlock",
    "UpBlock",
    "DownBlock",
    "SRGenerator",
    "SRCritic",
    "build_sr_generator",
    "build_sr_critic",
]

SR_NORMS = ("batch", "layer", "none")
SR_ACTIVATIONS = ("relu", "prelu", "lrelu")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # per-sample normalisation over (C, H, W)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {SR_NORMS}")


def _act(kind: str, channels: int) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "lrelu":
        return nn.LeakyReLU(0.2, inplace=True)
    raise ValueError(f"unknown activation {kind!r}; choose one of {SR_ACTIVATIONS}")


def _conv3(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


def _scale_last_conv(branch: nn.Sequential, factor: float) -> None:
    # Residual branches start close to zero (as ESRGAN's 0.1-scaled init): every block then
    # begins near the identity, so a deep stack trains from the first step.
    conv = [m for m in branch if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        conv.weight.mul_(factor)
        if conv.bias is not None:
            conv.bias.zero_()


class CommonBlock(nn.Module):
    """x + branch(x), branch = BN -> conv3x3 -> BN -> act -> conv3x3 (same size and width)."""

    def __init__(self, channels: int, norm: str = "batch", activation: str = "prelu", init_scale: float = 0.1):
        super().__init__()
        self.branch = nn.Sequential(
            _norm(norm, channels),
            _conv3(channels, channels),
            _norm(norm, channels),
            _act(activation, channels),
            _conv3(channels, channels),
        )
        _scale_last_conv(self.branch, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class UpBlock(nn.Module):
    """branch(x) + skip(x) at twice the size: conv3x3 -> pixel shuffle x2 -> BN -> act -> conv3x3,
    plus bilinear x2 -> conv1x1."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch", activation: str = "prelu"):
        super().__init__()
        self.branch = nn.Sequential(
            _conv3(in_channels, 4 * out_channels),
            nn.PixelShuffle(2),
            _norm(norm, out_channels),
            _act(activation, out_channels),
            _conv3(out_channels, out_channels),
        )
        self.skip = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, out_channels, 1),
        )
        _scale_last_conv(self.branch, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.skip(x)


class DownBlock(nn.Module):
    """The common block with 2x2 average pooling at the end of both branches; halves the size."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch", activation: str = "prelu"):
        super().__init__()
        self.branch = nn.Sequential(
            _norm(norm, in_channels),
            _conv3(in_channels, out_channels),
            _norm(norm, out_channels),
            _act(activation, out_channels),
            _conv3(out_channels, out_channels),
            nn.AvgPool2d(2),
        )
        skip: list[nn.Module] = [] if in_channels == out_channels else [nn.Conv2d(in_channels, out_channels, 1)]
        self.skip = nn.Sequential(*skip, nn.AvgPool2d(2))
        _scale_last_conv(self.branch, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.skip(x)


def _log2_scale(input_size: int, output_size: int) -> int:
    scale = output_size // input_size
    if input_size < 1 or output_size != scale * input_size or scale < 2 or scale & (scale - 1):
        raise ValueError(f"output_size / input_size must be a power of two >= 2, got {input_size} -> {output_size}")
    return int(math.log2(scale))


class SRGenerator(nn.Module):
    """LR (B, 3, s, s) in [-1, 1] -> SR (B, 3, scale*s, scale*s); see the module docstring."""

    def __init__(self, input_size: int = 16, output_size: int = 64, channels: int = 64, num_blocks: int = 8,
                 down_blocks: int = 0, min_channels: int = 16, norm: str = "batch", activation: str = "prelu",
                 residual: str = "bicubic", in_channels: int = 3):
        super().__init__()
        num_up = _log2_scale(input_size, output_size)
        if residual not in ("bicubic", "none"):
            raise ValueError(f"residual must be 'bicubic' or 'none', got {residual!r}")
        if input_size % (2**down_blocks):
            raise ValueError(f"{down_blocks} down blocks need an input size divisible by {2**down_blocks}, got {input_size}")
        self.input_size = input_size
        self.output_size = output_size
        self.scale = output_size // input_size
        self.residual = residual
        self.stem = _conv3(in_channels, channels)
        self.down = nn.ModuleList(DownBlock(channels, channels, norm, activation) for _ in range(down_blocks))
        self.body = nn.Sequential(*(CommonBlock(channels, norm, activation) for _ in range(num_blocks)))
        self.rise = nn.ModuleList(UpBlock(channels, channels, norm, activation) for _ in range(down_blocks))
        widths = [channels]
        for _ in range(num_up):
            widths.append(max(min_channels, widths[-1] // 2))
        self.up = nn.Sequential(*(UpBlock(a, b, norm, activation) for a, b in zip(widths[:-1], widths[1:])))
        self.tail = nn.Sequential(_act(activation, widths[-1]), _conv3(widths[-1], in_channels))
        if residual == "bicubic":
            # Start as the bicubic baseline exactly: the correction is zero until trained.
            nn.init.zeros_(self.tail[-1].weight)
            nn.init.zeros_(self.tail[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(x)
        skips = []
        h = features
        for block in self.down:
            skips.append(h)
            h = block(h)
        h = self.body(h)
        for block, skip in zip(self.rise, reversed(skips)):
            h = block(h) + skip
        h = self.up(h + features)
        out = self.tail(h)
        if self.residual == "bicubic":
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


class SRCritic(nn.Module):
    """HR (B, 3, S, S) -> (B,) scores for the adversarial term; see the module docstring."""

    def __init__(self, image_size: int = 64, channels: int = 32, max_channels: int = 256, norm: str = "layer",
                 activation: str = "lrelu", in_channels: int = 3):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"the critic needs a power-of-two image size >= 8, got {image_size}")
        if norm == "batch":
            raise ValueError("the SR critic must not use BatchNorm: the gradient penalty is per sample (use layer or none)")
        self.stem = _conv3(in_channels, channels)
        blocks: list[nn.Module] = []
        size, width = image_size, channels
        while size > 4:
            wider = min(max_channels, width * 2)
            blocks.append(DownBlock(width, wider, norm, activation))
            size, width = size // 2, wider
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(_act(activation, width), nn.Flatten(), nn.Linear(width * 16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).view(-1)


def build_sr_generator(cfg: Any) -> SRGenerator:
    """The generator described by `cfg` (an `SRModelConfig`)."""
    return SRGenerator(cfg.input_size, cfg.output_size, cfg.channels, cfg.num_blocks, cfg.down_blocks, cfg.min_channels,
                       cfg.norm, cfg.activation, cfg.residual)


def build_sr_critic(cfg: Any) -> SRCritic:
    """The critic for `cfg`'s output size."""
    return SRCritic(image_size=cfg.output_size, channels=cfg.critic_channels, max_channels=cfg.critic_max_channels,
                    norm=cfg.critic_norm, activation="lrelu")


def parameter_count(modules: Sequence[nn.Module] | nn.Module) -> int:
    """Trainable parameters of a module (or of several)."""
    if isinstance(modules, nn.Module):
        modules = [modules]
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
