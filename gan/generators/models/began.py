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

Options for a small CPU budget, all off by default (the defaults are the paper's networks):

- `convs_per_scale`: how many 3x3 convolutions each block has, one entry per resolution from
  8x8 up to the image size, shared by the decoder and the encoder (which meets the resolutions
  in the opposite order). The paper uses 2 everywhere. At 64 px with n channels the two blocks
  at 64x64 and 32x32 hold most of the FLOPs of both networks, so (2, 2, 1, 1) keeps the paper's
  repeated convolutions where the face structure is formed (8x8, 16x16) and one convolution
  per block at the two largest scales; every other element (ELU, no normalisation, strided
  subsampling, nearest-neighbour upsampling, the h bottleneck) is unchanged.
- `fast_elu`: the same function, ELU(x) = x for x > 0 and exp(x) - 1 otherwise, computed as
  max(x, 0) + exp(min(x, 0)) - 1 on CPU. PyTorch's CPU ELU evaluates expm1 element by element
  and takes about ten times as long as exp, which made the activations ~10% of a 64 px BEGAN
  step on one core; results agree with nn.ELU to within 1e-7. On other devices it is nn.ELU.
- `skip`: the paper's optional skip connections (drawn dashed in its figure 1): the decoder's first
  8x8 map h0 is upsampled (nearest) and concatenated to the input of every later block, so the
  first convolution of each block reads 2n channels. It shortens the path from the code to
  every scale, which helps early training; off by default, as in the paper's main runs.
- `channels_last`: keep the convolution weights in the NHWC memory format, which oneDNN's CPU
  convolutions (their backward passes especially) run faster on; values are unchanged, and
  activations follow the weights' format.
- `widths` (decoder only): the channels of each block, 8x8 first, instead of n everywhere. The
  paper's decoder is n wide at every scale, so with the small n a CPU budget affords (16) the
  8x8 and 16x16 maps where a face's layout is decided have 16 channels, against DCGAN's 1024
  and 512. A pyramid such as (64, 48, 32, 16) puts channels where the maps are small and keeps
  n at full size, where each channel costs most. The width changes in each block's last
  convolution, before the upsampling, so the change is paid at the smaller resolution.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


__all__ = ["FastELU", "BEGANDecoder", "BEGANEncoder", "BEGANGenerator", "BEGANDiscriminator", "build_began"]

SUPPORTED_SIZES = (32, 64, 128)


def _num_blocks(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}")
    return int(math.log2(image_size)) - 2


def _per_scale(values: Sequence[int] | None, default: int, blocks: int, image_size: int, name: str,
               unit: str) -> tuple[int, ...]:
    """Validated per-resolution values (convolution counts, channel widths), 8x8 first; None
    gives `default` at every resolution."""
    if values is None:
        return (default,) * blocks
    resolved = tuple(int(v) for v in values)
    if len(resolved) != blocks or any(v < 1 for v in resolved):
        sizes = [8 * 2**i for i in range(blocks)]
        raise ValueError(
            f"{name} needs {blocks} {unit} >= 1 at {image_size} px, one per resolution {sizes}; got {list(values)}"
        )
    return resolved


class _ELUFunction(torch.autograd.Function):
    """ELU (alpha 1) from exp instead of expm1; the gradient comes from the output alone."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp(max=0.0).exp_().sub_(1.0).add_(x.clamp(min=0.0))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        # d/dx = 1 where x > 0 (out > 0), exp(x) = out + 1 elsewhere.
        return grad * out.clamp(max=0.0).add_(1.0)


class FastELU(nn.ELU):
    """nn.ELU (alpha 1) with a faster CPU kernel; see the module docstring. Not in-place."""

    def __init__(self) -> None:
        super().__init__(alpha=1.0, inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not x.is_floating_point():
            return F.elu(x)
        return _ELUFunction.apply(x)


def _conv_elu(c_in: int, c_out: int, stride: int = 1, fast_elu: bool = False) -> list[nn.Module]:
    activation = FastELU() if fast_elu else nn.ELU(inplace=True)
    return [nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1), activation]


def _to_channels_last(module: nn.Module) -> None:
    # Only the 4-D convolution weights change format; Linear weights are 2-D.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)


class BEGANDecoder(nn.Module):
    """Code (B, latent_dim) -> image (B, out_channels, image_size, image_size).

    Args:
        latent_dim: size of the input code (Nz for the generator, h for the autoencoder).
        image_size: 32, 64 or 128.
        hidden_channels: n, the width of every decoder convolution (128 in the reference code).
        out_channels: image channels.
        tanh: bound the output with tanh (not in the paper).
        convs_per_scale: 3x3 convolutions per block, 8x8 first (None: 2 each, the paper).
        fast_elu: compute ELU with `FastELU` (same function, faster on CPU).
        channels_last: NHWC convolution weights (faster CPU convolutions, same values).
        skip: concatenate the upsampled h0 to every block's input (the paper's skip connections).
        widths: channels of each block, 8x8 first (None: hidden_channels everywhere, the paper).
    """

    def __init__(self, latent_dim: int = 64, image_size: int = 64, hidden_channels: int = 128, out_channels: int = 3,
                 tanh: bool = False, convs_per_scale: Sequence[int] | None = None, fast_elu: bool = False,
                 channels_last: bool = False, skip: bool = False, widths: Sequence[int] | None = None):
        super().__init__()
        blocks = _num_blocks(image_size)
        counts = _per_scale(convs_per_scale, 2, blocks, image_size, "convs_per_scale", "counts")
        widths = _per_scale(widths, hidden_channels, blocks, image_size, "widths", "channel counts")
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.project = nn.Sequential(
            nn.Linear(latent_dim, widths[0] * 8 * 8),
            nn.Unflatten(1, (widths[0], 8, 8)),
        )
        self.skip = skip
        layers: list[nn.Module] = []
        channels = widths[0]
        for index, count in enumerate(counts):
            for conv in range(count):
                c_in = channels + widths[0] if skip and index > 0 and conv == 0 else channels
                last = conv == count - 1 and index < blocks - 1
                channels = widths[index + 1] if last else widths[index]
                layers += _conv_elu(c_in, channels, fast_elu=fast_elu)
            if index < blocks - 1:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        # One Sequential either way, so checkpoints without skip connections keep their names.
        self.blocks = nn.Sequential(*layers)
        self.to_image = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)
        self.out = nn.Tanh() if tanh else nn.Identity()
        if channels_last:
            _to_channels_last(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h0 = self.project(z)
        if not self.skip:
            return self.out(self.to_image(self.blocks(h0)))
        x = h0
        for layer in self.blocks:
            x = layer(x)
            if isinstance(layer, nn.Upsample):
                x = torch.cat([x, F.interpolate(h0, size=x.shape[-2:], mode="nearest")], dim=1)
        return self.out(self.to_image(x))


class BEGANEncoder(nn.Module):
    """Image (B, in_channels, S, S) -> code (B, bottleneck_dim).

    Args:
        image_size: 32, 64 or 128.
        hidden_channels: n; block i has (i + 1) * n channels.
        bottleneck_dim: h, the size of the autoencoder's code (64 in the paper).
        in_channels: image channels.
        convs_per_scale: 3x3 convolutions per block, listed from 8x8 up as for the decoder
            (the encoder's first block is the last entry). None: 2 each, the paper.
        fast_elu: compute ELU with `FastELU` (same function, faster on CPU).
        channels_last: NHWC convolution weights (faster CPU convolutions, same values).
    """

    def __init__(self, image_size: int = 64, hidden_channels: int = 128, bottleneck_dim: int = 64,
                 in_channels: int = 3, convs_per_scale: Sequence[int] | None = None, fast_elu: bool = False,
                 channels_last: bool = False):
        super().__init__()
        blocks = _num_blocks(image_size)
        counts = _per_scale(convs_per_scale, 2, blocks, image_size, "convs_per_scale", "counts")[::-1]  # image size first
        layers: list[nn.Module] = _conv_elu(in_channels, hidden_channels, fast_elu=fast_elu)
        channels = hidden_channels
        for index, count in enumerate(counts):
            width = hidden_channels * (index + 1)
            for _ in range(count):
                layers += _conv_elu(channels, width, fast_elu=fast_elu)
                channels = width
            if index < blocks - 1:
                # Downsampling by a stride-2 convolution that also widens to the next block's
                # width: the paper's "sub-sampling with stride 2", no pooling.
                layers += _conv_elu(width, hidden_channels * (index + 2), stride=2, fast_elu=fast_elu)
                channels = hidden_channels * (index + 2)
        self.blocks = nn.Sequential(*layers)
        self.to_code = nn.Sequential(nn.Flatten(), nn.Linear(channels * 8 * 8, bottleneck_dim))
        if channels_last:
            _to_channels_last(self)

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
        convs_per_scale, fast_elu, channels_last: as for `BEGANDecoder`, applied to both halves.
        skip: skip connections in the decoder half (see `BEGANDecoder`).
        decoder_widths: per-block channels of the decoder half (see `BEGANDecoder`'s `widths`).
    """

    def __init__(self, image_size: int = 64, hidden_channels: int = 128, bottleneck_dim: int = 64, channels: int = 3,
                 tanh: bool = False, convs_per_scale: Sequence[int] | None = None, fast_elu: bool = False,
                 channels_last: bool = False, skip: bool = False, decoder_widths: Sequence[int] | None = None):
        super().__init__()
        self.image_size = image_size
        speed = {"convs_per_scale": convs_per_scale, "fast_elu": fast_elu, "channels_last": channels_last}
        self.encoder = BEGANEncoder(image_size, hidden_channels, bottleneck_dim, channels, **speed)
        self.decoder = BEGANDecoder(
            bottleneck_dim, image_size, hidden_channels, channels, tanh=tanh, skip=skip, widths=decoder_widths, **speed
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def build_began(cfg: Any) -> tuple[BEGANGenerator, BEGANDiscriminator]:
    """The generator and autoencoder discriminator described by `cfg` (its `began` section)."""
    b = cfg.resolved().began
    speed = {"convs_per_scale": b.convs_per_scale, "fast_elu": b.fast_elu, "channels_last": b.channels_last}
    generator = BEGANGenerator(
        b.latent_dim, cfg.image_size, b.hidden_channels, cfg.channels, tanh=b.tanh, skip=b.skip,
        widths=b.generator_widths, **speed,
    )
    discriminator = BEGANDiscriminator(
        cfg.image_size, b.hidden_channels, b.bottleneck_dim, cfg.channels, tanh=b.tanh, skip=b.skip,
        decoder_widths=b.decoder_widths, **speed,
    )
    return generator, discriminator
