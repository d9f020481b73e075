"""DCGAN: deep convolutional generator and all-convolutional discriminator.

Radford, Metz and Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016 (arXiv:1511.06434). The architecture guidelines of
its section 3 are followed: no pooling (strided convolutions in the discriminator, fractionally
strided ones in the generator), BatchNorm in both networks except the generator output and the
discriminator input layers, ReLU in the generator with tanh at the output, LeakyReLU(0.2) in the
discriminator, weights drawn from N(0, 0.02).

At 64 px the generator projects 100-d noise to 1024x4x4 and four transposed convolutions (kernel
4, stride 2, padding 1) halve the channels while doubling the size: 1024x4 -> 512x8 -> 256x16 ->
128x32 -> 3x64. Other sizes add or drop a stage from the top width down (32 px: 1024 -> 512 ->
256 -> 3; 128 px: ... -> 64 -> 3). The discriminator mirrors it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


__all__ = [
    "SUPPORTED_SIZES",
    "DISCRIMINATOR_NORMS",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "dcgan_init_",
    "build_dcgan",
]

SUPPORTED_SIZES = (32, 64, 128)
DISCRIMINATOR_NORMS = ("batch", "layer", "none")


def _num_upsamplings(image_size: int) -> int:
    """Stride-2 stages between the 4x4 seed and the image: 3 at 32 px, 4 at 64, 5 at 128."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}")
    return int(math.log2(image_size // 4))


def _widths(base_channels: int, stages: int) -> list[int]:
    """[base, base/2, ...]: the channel count halves at every stage, as in the paper."""
    if base_channels <= 0 or base_channels % 2 ** (stages - 1):
        raise ValueError(
            f"base_channels={base_channels} must be a positive multiple of {2 ** (stages - 1)} so that it "
            f"halves {stages - 1} times without rounding"
        )
    return [base_channels // 2**i for i in range(stages)]


def _discriminator_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        # Layer normalisation over (C, H, W) of each sample, i.e. GroupNorm with one group: unlike
        # BatchNorm it never mixes samples, so per-sample input gradients (WGAN-GP) stay valid.
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {DISCRIMINATOR_NORMS}, got {kind!r}")


class DCGANGenerator(nn.Module):
    """Noise (B, latent_dim) -> images (B, out_channels, image_size, image_size) in [-1, 1].

    Args:
        latent_dim: size of the noise vector (100 in the paper).
        image_size: 32, 64 or 128.
        base_channels: channels of the 4x4 projection (1024 in the paper); halves every stage.
        out_channels: image channels.
    """

    def __init__(self, latent_dim: int = 100, image_size: int = 64, base_channels: int = 1024, out_channels: int = 3):
        super().__init__()
        stages = _num_upsamplings(image_size)
        widths = _widths(base_channels, stages)
        self.latent_dim = latent_dim
        self.image_size = image_size
        # "Project and reshape": a matrix multiply whose output is the first 4x4 feature map. No
        # bias anywhere before a BatchNorm: the norm's shift makes it redundant.
        self.project = nn.Sequential(
            nn.Linear(latent_dim, widths[0] * 4 * 4, bias=False),
            nn.Unflatten(1, (widths[0], 4, 4)),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                )
                for c_in, c_out in zip(widths[:-1], widths[1:])
            )
        )
        # The output layer has no BatchNorm: the paper found normalising it destabilises training.
        self.to_image = nn.Sequential(
            nn.ConvTranspose2d(widths[-1], out_channels, kernel_size=4, stride=2, padding=1),
            nn.Tanh(),
        )
        dcgan_init_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_image(self.stages(self.project(z)))


class DCGANDiscriminator(nn.Module):
    """Images (B, in_channels, S, S) -> one real-valued logit per image, shape (B,).

    The mirror of the generator: strided 4x4 convolutions halve the size and double the channels up
    to `base_channels` at 4x4, and a final 4x4 convolution with no padding (the paper's "flatten
    and a single output", written as a convolution) gives the score. The output is a logit, not a
    probability: the losses apply the sigmoid in a numerically safe form.

    Args:
        image_size: 32, 64 or 128.
        base_channels: channels at 4x4 (1024 in the paper); halves towards the input.
        in_channels: image channels.
        norm: "batch" (the paper), "layer" or "none". WGAN-GP's gradient penalty is a per-sample
            quantity and BatchNorm couples the samples of a batch, so Gulrajani et al. (2017) use
            no BatchNorm in the critic and recommend layer normalisation: use "layer" or "none"
            with the "wgan-gp" loss. The first layer is never normalised (as in the paper).
        negative_slope: LeakyReLU slope (0.2 in the paper).
    """

    def __init__(
        self,
        image_size: int = 64,
        base_channels: int = 1024,
        in_channels: int = 3,
        norm: str = "batch",
        negative_slope: float = 0.2,
    ):
        super().__init__()
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"norm must be one of {DISCRIMINATOR_NORMS}, got {norm!r}")
        stages = _num_upsamplings(image_size)
        widths = _widths(base_channels, stages)[::-1]  # e.g. 128, 256, 512, 1024 at 64 px
        self.image_size = image_size
        self.norm = norm
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(negative_slope, inplace=True),
        )
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=norm == "none"),
                    _discriminator_norm(norm, c_out),
                    nn.LeakyReLU(negative_slope, inplace=True),
                )
                for c_in, c_out in zip(widths[:-1], widths[1:])
            )
        )
        self.head = nn.Conv2d(widths[-1], 1, kernel_size=4, stride=1, padding=0)
        dcgan_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x))).flatten()


@torch.no_grad()
def dcgan_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """The paper's initialisation: weights ~ N(0, std), BatchNorm scales ~ N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def build_dcgan(cfg: Any) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """The generator and discriminator described by `cfg` (its `dcgan` section, resolved)."""
    d = cfg.resolved().dcgan
    generator = DCGANGenerator(d.latent_dim, cfg.image_size, d.g_channels, cfg.channels)
    discriminator = DCGANDiscriminator(cfg.image_size, d.d_channels, cfg.channels, norm=d.d_norm)
    return generator, discriminator
