"""The face super-resolution run configuration: one dataclass tree, presets in presets/*.yaml.

    SRRunConfig
      sr: SRConfig             the maths: networks, degradation, losses, optimiser, phases
        model: SRModelConfig
        degradation: DegradationConfig   (data_prep/degrade.py)
        loss: SRLossConfig
        optim: SROptimConfig
      data: SRDataConfig       where the HR faces come from (data_prep.sources.SourceConfig)
      trainer: TrainerConfig   the engine's schedule: steps, batch, EMA, checkpoints

Training has two phases inside one run: steps [0, pretrain_steps) use the pixel loss (plus
LPIPS if weighted) alone; from `pretrain_steps` on, the adversarial term and the critic updates
join. `pretrain_steps < 0` never starts the adversarial phase. The critic and both optimisers
exist from step 0, so a checkpoint from either phase resumes exactly.

`sr` is written into every checkpoint (run_config["sr"], degradation included) and is what
`facegan sr apply|eval` rebuild the generator from (gan.sr.inference).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from data_prep.sources import SourceConfig
from engine.config import ConfigError
from engine.schedules import SCHEDULES
from engine.trainer import TrainerConfig
from data_prep.degrade import DegradationConfig
from gan.losses import GAN_LOSSES
from gan.sr.losses import PIXEL_LOSSES
from gan.sr.models import SR_ACTIVATIONS, SR_NORMS

__all__ = [
    "SRModelConfig",
    "SRLossConfig",
    "SROptimConfig",
    "SRConfig",
    "SRDataConfig",
    "SRRunConfig",
    "default_trainer",
    "PIXEL_LOSS_NAMES",
    "LR_SCHEDULES",
]

PIXEL_LOSS_NAMES = PIXEL_LOSSES
LR_SCHEDULES = SCHEDULES


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {message}")


@dataclass
class SRModelConfig:
    """Generator and critic geometry (gan/sr/models.py)."""

    input_size: int = 16  # LR side in pixels
    output_size: int = 64  # HR side; output_size / input_size is the scale (2, 4, 8 or 16)
    channels: int = 64  # generator width at the LR resolution
    num_blocks: int = 8  # common blocks at the LR resolution
    down_blocks: int = 0  # hourglass depth at LR: down blocks before the common blocks, up blocks after
    min_channels: int = 16  # the width halves at every x2 up block, down to this
    norm: str = "batch"  # generator blocks: batch (the thesis's) | layer | none
    activation: str = "prelu"  # relu | prelu | lrelu
    residual: str = "bicubic"  # bicubic: predict a correction to bicubic upsampling | none
    critic_channels: int = 32  # critic width at the HR resolution; doubles per down block
    critic_max_channels: int = 256
    critic_norm: str = "layer"  # layer | none (no BatchNorm with a gradient penalty)

    def __post_init__(self) -> None:
        scale = self.output_size // max(1, self.input_size)
        _check(self.input_size >= 4, "model.input_size", f"must be >= 4, got {self.input_size}")
        _check(self.output_size == scale * self.input_size and scale in (2, 4, 8, 16), "model.output_size",
               f"must be 2, 4, 8 or 16 times input_size, got {self.input_size} -> {self.output_size}")
        _check(self.output_size & (self.output_size - 1) == 0 and self.output_size >= 8, "model.output_size",
               f"must be a power of two >= 8 (the critic halves it down to 4), got {self.output_size}")
        _check(self.channels >= 4 and self.min_channels >= 4, "model.channels/min_channels", "must be >= 4")
        _check(self.num_blocks >= 0 and self.down_blocks >= 0, "model.num_blocks/down_blocks", "must be >= 0")
        _check(self.input_size % (2**self.down_blocks) == 0, "model.down_blocks",
               f"{self.down_blocks} down blocks need input_size divisible by {2**self.down_blocks}")
        _check(self.norm in SR_NORMS, "model.norm", f"choose one of {SR_NORMS}, got {self.norm!r}")
        _check(self.activation in SR_ACTIVATIONS, "model.activation", f"choose one of {SR_ACTIVATIONS}, got {self.activation!r}")
        _check(self.residual in ("bicubic", "none"), "model.residual", f"bicubic or none, got {self.residual!r}")
        _check(self.critic_norm in ("layer", "none"), "model.critic_norm",
               f"layer or none (BatchNorm breaks the per-sample gradient penalty), got {self.critic_norm!r}")
        _check(self.critic_channels >= 4 and self.critic_max_channels >= self.critic_channels,
               "model.critic_channels", "must be >= 4 and <= critic_max_channels")

    @property
    def scale(self) -> int:
        return self.output_size // self.input_size


@dataclass
class SRLossConfig:
    """Pixel, perceptual and adversarial terms of the generator loss."""

    pixel: str = "l1"  # l1 | l2 (pixel difference to the HR image)
    pixel_weight: float = 1.0
    lpips_weight: float = 0.0  # > 0 adds LPIPS; needs the backbone weights (gan/metrics/lpips_loader.py)
    lpips_net: str = "alex"  # alex | vgg | squeeze
    adversarial: str = "wgan-gp"  # wgan-gp | nonsaturating | hinge (gan/losses.py)
    adversarial_weight: float = 1e-3  # weight of the generator's adversarial term; 0 disables the critic
    gp_weight: float = 10.0  # lambda of the gradient penalty (wgan-gp)
    n_critic: int = 1  # critic updates per generator update in the adversarial phase

    def __post_init__(self) -> None:
        _check(self.pixel in PIXEL_LOSS_NAMES, "loss.pixel", f"choose one of {PIXEL_LOSS_NAMES}, got {self.pixel!r}")
        _check(self.adversarial in GAN_LOSSES, "loss.adversarial", f"choose one of {sorted(GAN_LOSSES)}, got {self.adversarial!r}")
        _check(self.lpips_net in ("alex", "vgg", "squeeze"), "loss.lpips_net", f"alex, vgg or squeeze, got {self.lpips_net!r}")
        for name in ("pixel_weight", "lpips_weight", "adversarial_weight", "gp_weight"):
            _check(getattr(self, name) >= 0, f"loss.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(self.n_critic >= 1, "loss.n_critic", f"must be >= 1, got {self.n_critic}")


@dataclass
class SROptimConfig:
    """Adam for both networks; the generator's learning rate follows `schedule`."""

    lr: float = 2e-4  # generator
    betas: tuple[float, float] = (0.9, 0.99)
    critic_lr: float = 1e-4
    critic_betas: tuple[float, float] = (0.0, 0.9)  # WGAN-GP's
    schedule: str = "cosine"  # cosine | step | constant
    warmup_steps: int = 0  # linear warm-up from 0
    min_lr_ratio: float = 0.02  # cosine: the last step's lr / lr
    step_every: int = 0  # step: multiply by step_gamma every this many steps
    step_gamma: float = 0.5
    total_steps: int = 0  # cosine length; 0: the run's trainer.max_steps (filled in by `facegan sr train`)

    def __post_init__(self) -> None:
        _check(self.lr > 0 and self.critic_lr > 0, "optim.lr/critic_lr", "must be positive")
        for name in ("betas", "critic_betas"):
            pair = tuple(getattr(self, name))
            _check(len(pair) == 2 and all(0.0 <= b < 1.0 for b in pair), f"optim.{name}", f"two values in [0, 1), got {pair}")
            setattr(self, name, pair)
        _check(self.schedule in LR_SCHEDULES, "optim.schedule", f"choose one of {LR_SCHEDULES}, got {self.schedule!r}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.warmup_steps >= 0 and self.total_steps >= 0, "optim.warmup_steps/total_steps", "must be >= 0")
        _check(self.schedule != "step" or self.step_every > 0, "optim.step_every", "the step schedule needs step_every > 0")
        _check(0.0 < self.step_gamma <= 1.0, "optim.step_gamma", f"must be in (0, 1], got {self.step_gamma}")


@dataclass
class SRConfig:
    """One SR model and how it learns; written into its checkpoints."""

    model: SRModelConfig = field(default_factory=SRModelConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    loss: SRLossConfig = field(default_factory=SRLossConfig)
    optim: SROptimConfig = field(default_factory=SROptimConfig)
    pretrain_steps: int = 1000  # pixel-only steps before the adversarial phase; < 0: never adversarial
    seed: int = 0  # initial weights
    num_samples: int = 8  # LR | bicubic | SR | HR strips in each sample grid
    eval_batch_size: int = 64
    channels_last: bool = True  # train in NHWC memory order (about 15% faster convolutions with oneDNN on CPU)

    def __post_init__(self) -> None:
        _check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        _check(self.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")

    @property
    def adversarial(self) -> bool:
        """Whether the run ever trains adversarially."""
        return self.pretrain_steps >= 0 and self.loss.adversarial_weight > 0

    def resolved(self, max_steps: int) -> "SRConfig":
        """A copy with optim.total_steps filled in from the Trainer's max_steps when left at 0."""
        optim = self.optim
        if optim.total_steps == 0:
            optim = dataclasses.replace(optim, total_steps=max_steps)
        return dataclasses.replace(self, optim=optim)


@dataclass
class SRDataConfig(SourceConfig):
    """HR faces (aligned at model.output_size through the aligned cache) and held-out faces."""

    split: str = "train"  # split trained on; "all" uses every face
    flip: bool = True  # random horizontal flips
    eval_split: str = "val"  # faces for the periodic PSNR check and sample strips ("none" disables)
    eval_images: int = 128  # how many of them (evenly spaced over the split)

    def __post_init__(self) -> None:
        _check(self.split in ("train", "val", "test", "all"), "data.split", f"train, val, test or all, got {self.split!r}")
        _check(self.eval_split in ("train", "val", "test", "none"), "data.eval_split",
               f"train, val, test or none, got {self.eval_split!r}")
        _check(self.eval_images >= 0, "data.eval_images", f"must be >= 0, got {self.eval_images}")


def default_trainer() -> TrainerConfig:
    return TrainerConfig(
        out_dir="runs/sr", max_steps=4000, batch_size=16, ema_decay=0.999, ema_modules=("generator",),
        sample_every=500, eval_every=500, checkpoint_every=500, log_every=20, best_metric="psnr_y", best_mode="max",
    )


@dataclass
class SRRunConfig:
    sr: SRConfig = field(default_factory=SRConfig)
    data: SRDataConfig = field(default_factory=SRDataConfig)
    trainer: TrainerConfig = field(default_factory=default_trainer)
