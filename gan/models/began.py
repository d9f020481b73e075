"""BEGAN: Boundary Equilibrium GAN, whose discriminator is an autoencoder.

Berthelot, Schumm and Metz, "BEGAN: Boundary Equilibrium Generative Adversarial Networks", 2017
(arXiv:1703.10717), section 3.3 and figure 1:

- decoder (also the generator): h -> fully connected to 8x8xn -> blocks of two 3x3 convolutions
  with ELU, separated by nearest-neighbour upsampling x2 -> a 3x3 convolution to the image;
- encoder: a 3x3 convolution, then blocks of two 3x3 convolutions with ELU separated by stride-2
  "subsampling" convolutions, the channels growing linearly (n, 2n, 3n, ...) at every
  downsampling -> fully connected to the bottleneck h, with no activation;
- ELU everywhere and no BatchNorm (the paper's point is that the equilibrium control makes it
  unnecessary); PyTorch's default initialisation (the paper specifies none).

A block count of log2(size) - 2 gives 8x8 -> 32, 64 or 128 px. The paper's decoder ends in a
plain convolution, not tanh; that is the default here (`tanh=False`), so generated pixels may
leave [-1, 1] slightly and are clamped only for display and sampling. `tanh=True` bounds them.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from gan.config import GANConfig

__all__ = ["BEGANDecoder", "BEGANEncoder", "BEGANGenerator", "BEGANDiscriminator", "build_began"]

SUPPORTED_SIZES = (32, 64, 128)


def _num_blocks(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}")
    return int(math.log2(image_size)) - 2


def _conv_elu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1), nn.ELU(inplace=True)]


class BEGANDecoder(nn.Module):
    """Code (B, latent_dim) -> image (B, out_channels, image_size, image_size).

    Args:
        latent_dim: size of the input code (Nz for the generator, h for the autoencoder).
        image_size: 32, 64 or 128.
        hidden_channels: n, the width of every decoder convolution (128 in the reference code).
        out_channels: image channels.
        tanh: bound the output with tanh (not in the paper).
    """

    def __init__(
        self,
        latent_dim: int = 64,
        image_size: int = 64,
        hidden_channels: int = 128,
        out_channels: int = 3,
        tanh: bool = False,
    ):
        super().__init__()
        blocks = _num_blocks(image_size)
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.project = nn.Sequential(
            nn.Linear(latent_dim, hidden_channels * 8 * 8),
            nn.Unflatten(1, (hidden_channels, 8, 8)),
        )
        layers: list[nn.Module] = []
        for index in range(blocks):
            layers += _conv_elu(hidden_channels, hidden_channels) + _conv_elu(hidden_channels, hidden_channels)
            if index < blocks - 1:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.blocks = nn.Sequential(*layers)
        self.to_image = nn.Conv2d(hidden_channels, out_channels, kernel_size=3, padding=1)
        self.out = nn.Tanh() if tanh else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.to_image(self.blocks(self.project(z))))


class BEGANEncoder(nn.Module):
    """Image (B, in_channels, S, S) -> code (B, bottleneck_dim).

    Args:
        image_size: 32, 64 or 128.
        hidden_channels: n; block i has (i + 1) * n channels.
        bottleneck_dim: h, the size of the autoencoder's code (64 in the paper).
        in_channels: image channels.
    """

    def __init__(self, image_size: int = 64, hidden_channels: int = 128, bottleneck_dim: int = 64, in_channels: int = 3):
        super().__init__()
        blocks = _num_blocks(image_size)
        layers: list[nn.Module] = _conv_elu(in_channels, hidden_channels)
        channels = hidden_channels
        for index in range(blocks):
            width = hidden_channels * (index + 1)
            layers += _conv_elu(channels, width) + _conv_elu(width, width)
            channels = width
            if index < blocks - 1:
                # Downsampling by a stride-2 convolution that also widens to the next block's
                # width: the paper's "sub-sampling with stride 2", no pooling.
                layers += _conv_elu(width, hidden_channels * (index + 2), stride=2)
                channels = hidden_channels * (index + 2)
        self.blocks = nn.Sequential(*layers)
        self.to_code = nn.Sequential(nn.Flatten(), nn.Linear(channels * 8 * 8, bottleneck_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_code(self.blocks(x))


class BEGANGenerator(BEGANDecoder):
    """The BEGAN generator: a decoder with its own weights, fed noise z of size Nz (64)."""


class BEGANDiscriminator(nn.Module):
    """The BEGAN discriminator, an autoencoder: forward(x) returns the reconstruction of x.

    Args:
        image_size: 32, 64 or 128.
        hidden_channels: n (128 in the reference code).
        bottleneck_dim: h (64 in the paper).
        channels: image channels.
        tanh: bound the reconstruction with tanh (keep equal to the generator's choice).
    """

    def __init__(
        self,
        image_size: int = 64,
        hidden_channels: int = 128,
        bottleneck_dim: int = 64,
        channels: int = 3,
        tanh: bool = False,
    ):
        super().__init__()
        self.image_size = image_size
        self.encoder = BEGANEncoder(image_size, hidden_channels, bottleneck_dim, channels)
        self.decoder = BEGANDecoder(bottleneck_dim, image_size, hidden_channels, channels, tanh=tanh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def build_began(cfg: "GANConfig") -> tuple[BEGANGenerator, BEGANDiscriminator]:
    """The generator and autoencoder discriminator described by `cfg` (its `began` section)."""
    b = cfg.resolved().began
    generator = BEGANGenerator(b.latent_dim, cfg.image_size, b.hidden_channels, cfg.channels, tanh=b.tanh)
    discriminator = BEGANDiscriminator(cfg.image_size, b.hidden_channels, b.bottleneck_dim, cfg.channels, tanh=b.tanh)
    return generator, discriminator
