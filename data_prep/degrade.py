"""The SR degradation: how a training (or evaluation) LR image is made from an HR face.

Pipeline, in this order, on (B, 3, H, W) images on the 0..255 scale:

1. blur (with probability `blur_prob`): isotropic Gaussian on the HR image, sigma drawn
   uniformly from `blur_sigma`, given in LR pixels (multiplied by the scale factor at HR), so one
   setting means the same softness at x4 and x8; reflect padding;
2. downsample: bicubic with antialiasing (`torch.nn.functional.interpolate(mode="bicubic",
   antialias=True, align_corners=False)`, the filter PIL's BICUBIC resize uses, scaled to the
   factor), always;
3. noise (with probability `noise_prob`): additive white Gaussian noise per pixel and channel,
   sigma drawn uniformly from `noise_sigma` (0..255 scale), then clipping to 0..255;
4. quantisation to 8 bits (rounding), as any saved image is;
5. JPEG (with probability `jpeg_prob`): encode and decode at a quality drawn uniformly from the
   integers in `jpeg_quality` (libjpeg through Pillow, 4:2:0 chroma subsampling).

All off (the default) is the classic "bicubic" SR degradation. Blur, noise and JPEG imitate
low-quality datasets (web photos, LFW's compressed crops).

Randomness: every random choice for an image comes from a torch.Generator seeded with that
image's own seed, so a degradation does not depend on the batch size or the batch order.
Training draws seeds from the run's step RNG (a resumed run degrades exactly as an uninterrupted
one); evaluation uses `eval_seeds(config, indices)`, a function of `DegradationConfig.seed` and
the image index alone. The config is recorded in every SR checkpoint (run_config["sr"]
["degradation"]) and in every eval report, with `describe()`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from data_prep.transforms import gaussian_blur, jpeg_round_trip, resize_images, to_uint8_range, to_unit_range
from engine.config import ConfigError
from engine.reproducibility import derive_seed

__all__ = ["DegradationConfig", "Degradation", "bicubic_downsample", "bicubic_upsample", "eval_seeds"]


@dataclass
class DegradationConfig:
    blur_prob: float = 0.0  # share of images blurred before downsampling
    blur_sigma: tuple[float, float] = (0.2, 1.0)  # Gaussian sigma range, in LR pixels
    noise_prob: float = 0.0  # share of images with additive Gaussian noise (at LR)
    noise_sigma: tuple[float, float] = (1.0, 8.0)  # noise sigma range, 0..255 scale
    jpeg_prob: float = 0.0  # share of images JPEG-compressed (at LR, last)
    jpeg_quality: tuple[int, int] = (40, 95)  # JPEG quality range, inclusive
    seed: int = 0  # seeds evaluation degradations (training ones follow the run's seed too)

    def __post_init__(self) -> None:
        for name in ("blur_prob", "noise_prob", "jpeg_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"degradation.{name}: must be in [0, 1], got {value}")
        for name, low_bound in (("blur_sigma", 0.0), ("noise_sigma", 0.0), ("jpeg_quality", 1)):
            pair = tuple(getattr(self, name))
            if len(pair) != 2 or not low_bound <= pair[0] <= pair[1]:
                raise ConfigError(f"degradation.{name}: expected (low, high) with {low_bound} <= low <= high, got {pair}")
            setattr(self, name, pair)
        if self.jpeg_quality[1] > 100:
            raise ConfigError(f"degradation.jpeg_quality: at most 100, got {self.jpeg_quality}")

    @property
    def is_clean(self) -> bool:
        return self.blur_prob == 0 and self.noise_prob == 0 and self.jpeg_prob == 0


def bicubic_downsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downsampling by an integer factor (float in, float out)."""
    height, width = images.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"a {height}x{width} image cannot be downsampled by {scale} exactly")
    return resize_images(images, (height // scale, width // scale))


def bicubic_upsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline every SR metric is shown against (torch's bicubic, a = -0.75)."""
    return F.interpolate(images, scale_factor=scale, mode="bicubic", align_corners=False)


def eval_seeds(config: DegradationConfig, indices: Sequence[int]) -> list[int]:
    """Per-image degradation seeds for evaluation: a function of the config seed and the index."""
    return [derive_seed(config.seed, "eval-degradation", int(i)) for i in indices]


class Degradation:
    """HR faces -> LR faces by `config`; see the module docstring.

        degrade = Degradation(DegradationConfig(noise_prob=0.5), scale=4)
        lr = degrade(hr_uint8, seeds=[11, 12, 13])   # (3, 3, H/4, W/4) float in [-1, 1]
    """

    def __init__(self, config: DegradationConfig, scale: int):
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.config = config
        self.scale = int(scale)

    def describe(self) -> dict:
        """The config and the fixed choices, for checkpoints and reports."""
        return {
            **asdict(self.config),
            "scale": self.scale,
            "order": "blur(HR) -> antialiased bicubic downsample -> noise -> 8-bit rounding -> JPEG",
            "downsample": "torch interpolate bicubic, antialias=True, align_corners=False",
            "blur_sigma_units": "LR pixels",
            "noise_sigma_units": "0..255",
        }

    def _draw(self, seeds: Sequence[int], lr_shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        cfg = self.config
        n = len(seeds)
        use = torch.zeros(n, 3, dtype=torch.bool)
        blur = torch.zeros(n)
        noise_sigma = torch.zeros(n)
        quality = torch.zeros(n, dtype=torch.int64)
        noise = torch.zeros((n,) + lr_shape) if cfg.noise_prob > 0 else None
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            # Fixed draw order and count per image, whatever is enabled: switching one part on
            # does not reshuffle the others' draws.
            u = torch.rand(6, generator=g, dtype=torch.float64)
            use[i, 0] = bool(u[0] < cfg.blur_prob)
            use[i, 1] = bool(u[1] < cfg.noise_prob)
            use[i, 2] = bool(u[2] < cfg.jpeg_prob)
            blur[i] = cfg.blur_sigma[0] + float(u[3]) * (cfg.blur_sigma[1] - cfg.blur_sigma[0]) if use[i, 0] else 0.0
            noise_sigma[i] = cfg.noise_sigma[0] + float(u[4]) * (cfg.noise_sigma[1] - cfg.noise_sigma[0]) if use[i, 1] else 0.0
            low, high = cfg.jpeg_quality
            quality[i] = min(high, low + int(float(u[5]) * (high - low + 1)))
            if noise is not None and use[i, 1]:
                noise[i] = torch.randn(lr_shape, generator=g)
        return {"use": use, "blur": blur, "noise_sigma": noise_sigma, "quality": quality, "noise": noise}

    def _blur(self, images: torch.Tensor, sigmas_hr: torch.Tensor) -> torch.Tensor:
        # The radius follows the configured maximum, not this batch's: an image's result must
        # not depend on which other images share its batch.
        radius = max(1, int(math.ceil(3.0 * self.config.blur_sigma[1] * self.scale)))
        return gaussian_blur(images, sigmas_hr, radius)

    @staticmethod
    def _jpeg(images_u8: torch.Tensor, use: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        out = images_u8.clone()
        for i in torch.nonzero(use).flatten().tolist():
            decoded = jpeg_round_trip(images_u8[i].permute(1, 2, 0).cpu().numpy(), int(quality[i]), subsampling=2)
            out[i] = torch.from_numpy(decoded).permute(2, 0, 1).to(out.device)
        return out

    @torch.no_grad()
    def degrade_uint8(self, hr: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """(B, 3, H, W) HR, uint8 or float in [-1, 1] -> (B, 3, H/s, W/s) uint8 LR."""
        if hr.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(hr.shape)}")
        if len(seeds) != hr.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {hr.shape[0]} images")
        x = hr.float() if hr.dtype == torch.uint8 else to_uint8_range(hr)
        b, c, h, w = x.shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"HR images of {h}x{w} cannot be downsampled by {self.scale} exactly")
        draws = self._draw(seeds, (c, h // self.scale, w // self.scale))
        x = self._blur(x, draws["blur"] * self.scale)
        x = bicubic_downsample(x, self.scale)
        if draws["noise"] is not None:
            x = x + draws["noise"].to(x.device) * draws["noise_sigma"].to(x.device).view(-1, 1, 1, 1)
        lr = x.clamp_(0.0, 255.0).round_().to(torch.uint8)
        if bool(draws["use"][:, 2].any()):
            lr = self._jpeg(lr, draws["use"][:, 2], draws["quality"])
        return lr

    def __call__(self, hr: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """(B, 3, H, W) HR, uint8 or float in [-1, 1] -> LR float in [-1, 1] on 8-bit levels."""
        return to_unit_range(self.degrade_uint8(hr, seeds))
