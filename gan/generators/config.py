"""The face generators' run configuration: the single source of truth, presets in presets/*.yaml.

    GANRunConfig
      gan: GANConfig          the maths: family (DCGAN or BEGAN), geometry, noise, losses
        dcgan: DCGANConfig
        began: BEGANConfig
      data: GANDataConfig     where the training faces come from (data_prep.sources.SourceConfig)
      trainer: TrainerConfig  the engine's schedule: steps, batch, EMA, checkpoints


Defaults follow the papers:
- DCGAN (Radford et al. 2016, arXiv:1511.06434): 100-d uniform noise, 1024 channels at 4x4,
  Adam lr 2e-4 with beta1 0.5, the non-saturating loss, one discriminator update per generator
  update.
- WGAN-GP (Gulrajani et al. 2017, arXiv:1704.00028), chosen with `dcgan.loss=wgan-gp`: Adam lr
  1e-4, betas (0, 0.9), five critic updates per generator update, lambda 10, no BatchNorm in the
  critic (layer normalisation instead).
- BEGAN (Berthelot et al. 2017, arXiv:1703.10717): Nz = h = 64, n = 128, gamma 0.5, lambda_k
  0.001, k_0 = 0, the L1 autoencoder loss (eta 1), Adam lr 1e-4.

Fields left at None mean "the paper's value for the chosen loss" and are filled in by
`GANConfig.resolved()`, which the models and steps always use; log the resolved config.

The training schedule (steps, batch size, EMA, AMP, ...) is the engine's `TrainerConfig`, not
repeated here. BEGAN was trained with batch 16 and DCGAN with batch 128 in the papers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from data_prep.sources import SourceConfig
from engine.config import ConfigError
from engine.trainer import TrainerConfig
from gan.generators.models.dcgan import DISCRIMINATOR_NORMS, SUPPORTED_SIZES
from gan.generators.models.latent import LATENT_DISTRIBUTIONS
from gan.losses import GAN_LOSSES

__all__ = ["DCGANConfig", "BEGANConfig", "GANConfig", "GAN_MODELS", "GANDataConfig", "GANRunConfig", "default_trainer"]

GAN_MODELS = ("dcgan", "began")


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {message}")


def _check_betas(betas: tuple[float, float] | None, where: str) -> None:
    if betas is None:
        return
    _check(len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas), where, f"expected two values in [0, 1), got {betas!r}")


@dataclass
class DCGANConfig:
    """DCGAN networks and their adversarial objective."""

    latent_dim: int = 100
    g_channels: int = 1024  # generator channels at 4x4; halves at every upsampling
    d_channels: int = 1024  # discriminator channels at 4x4; halves towards the input
    d_norm: str = "auto"  # batch | layer | none; auto: batch, or layer for wgan-gp
    loss: str = "nonsaturating"  # nonsaturating | wgan-gp | hinge
    n_critic: int | None = None  # discriminator updates per generator update; None: 5 for wgan-gp, else 1
    gp_weight: float = 10.0  # lambda of the gradient penalty (wgan-gp only)
    lr_g: float | None = None  # None: 1e-4 for wgan-gp, else 2e-4
    lr_d: float | None = None
    betas: tuple[float, float] | None = None  # None: (0.0, 0.9) for wgan-gp, else (0.5, 0.999)

    def __post_init__(self) -> None:
        _check(self.loss in GAN_LOSSES, "dcgan.loss", f"unknown loss {self.loss!r}; choose one of {sorted(GAN_LOSSES)}")
        _check(self.d_norm == "auto" or self.d_norm in DISCRIMINATOR_NORMS, "dcgan.d_norm",
               f"expected auto or one of {DISCRIMINATOR_NORMS}, got {self.d_norm!r}")
        # The gradient penalty constrains each sample's input gradient; BatchNorm makes a sample's
        # score depend on the rest of its batch, so the penalty no longer means what it should.
        _check(not (self.loss == "wgan-gp" and self.d_norm == "batch"), "dcgan.d_norm",
               "WGAN-GP must not use BatchNorm in the critic (Gulrajani et al. 2017); use layer or none")
        _check(self.latent_dim > 0, "dcgan.latent_dim", f"must be positive, got {self.latent_dim}")
        _check(self.g_channels > 0 and self.d_channels > 0, "dcgan.g_channels/d_channels", "must be positive")
        _check(self.n_critic is None or self.n_critic >= 1, "dcgan.n_critic", f"must be >= 1, got {self.n_critic}")
        _check(self.gp_weight >= 0, "dcgan.gp_weight", f"must be >= 0, got {self.gp_weight}")
        for name in ("lr_g", "lr_d"):
            value = getattr(self, name)
            _check(value is None or value > 0, f"dcgan.{name}", f"must be positive, got {value}")
        _check_betas(self.betas, "dcgan.betas")

    def resolved(self) -> "DCGANConfig":
        """A copy with every None / auto replaced by the paper's value for `loss`."""
        wgan = self.loss == "wgan-gp"
        return dataclasses.replace(
            self,
            d_norm=("layer" if wgan else "batch") if self.d_norm == "auto" else self.d_norm,
            n_critic=(5 if wgan else 1) if self.n_critic is None else self.n_critic,
            lr_g=(1e-4 if wgan else 2e-4) if self.lr_g is None else self.lr_g,
            lr_d=(1e-4 if wgan else 2e-4) if self.lr_d is None else self.lr_d,
            betas=((0.0, 0.9) if wgan else (0.5, 0.999)) if self.betas is None else tuple(self.betas),
        )


@dataclass
class BEGANConfig:
    """BEGAN networks, the equilibrium controller and the optimiser."""

    latent_dim: int = 64  # Nz
    hidden_channels: int = 128  # n
    bottleneck_dim: int = 64  # h
    tanh: bool = False  # the paper's decoders end in a plain convolution
    gamma: float = 0.5  # diversity ratio E[L(G(z))] / E[L(x)]; the paper shows 0.3..0.7
    lambda_k: float = 0.001  # proportional gain of the k_t controller
    k_init: float = 0.0  # k_0
    eta: float = 1.0  # L(v) = mean |v - D(v)|^eta; 1 (L1) in the paper's experiments
    lr: float = 1e-4  # both networks
    betas: tuple[float, float] = (0.5, 0.999)
    lr_halve_every: int = 0  # halve both learning rates every this many steps; 0 keeps them fixed
    # Speed options for small CPU budgets (gan/generators/models/began.py explains each); off = the paper.
    convs_per_scale: tuple[int, ...] | None = None  # 3x3 convs per block, 8x8 first; None: 2 each
    fast_elu: bool = False  # same ELU, computed from exp (faster on CPU)
    channels_last: bool = False  # NHWC convolution weights
    skip: bool = False  # the paper's optional skip connections: upsampled h0 concatenated to every decoder block
    # Channels per decoder block, 8x8 first (e.g. [64, 48, 32, 16]); None: hidden_channels at every scale.
    generator_widths: tuple[int, ...] | None = None
    decoder_widths: tuple[int, ...] | None = None  # the discriminator's decoder half

    def __post_init__(self) -> None:
        for name, unit in (("convs_per_scale", "count"), ("generator_widths", "width"), ("decoder_widths", "width")):
            values = getattr(self, name)
            if values is not None:
                values = tuple(int(v) for v in values)
                setattr(self, name, values)
                _check(all(v >= 1 for v in values), f"began.{name}", f"every {unit} must be >= 1, got {list(values)}")
        _check(0.0 < self.gamma <= 1.0, "began.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(self.lambda_k > 0, "began.lambda_k", f"must be positive, got {self.lambda_k}")
        _check(0.0 <= self.k_init <= 1.0, "began.k_init", f"must be in [0, 1], got {self.k_init}")
        _check(self.eta > 0, "began.eta", f"must be positive, got {self.eta}")
        _check(self.lr > 0, "began.lr", f"must be positive, got {self.lr}")
        _check(self.lr_halve_every >= 0, "began.lr_halve_every", f"must be >= 0, got {self.lr_halve_every}")
        for name in ("latent_dim", "hidden_channels", "bottleneck_dim"):
            _check(getattr(self, name) > 0, f"began.{name}", f"must be positive, got {getattr(self, name)}")
        _check_betas(self.betas, "began.betas")

    def resolved(self) -> "BEGANConfig":
        return dataclasses.replace(self, betas=tuple(self.betas))


@dataclass
class GANConfig:
    """One face-generator run: which family, the image geometry, the noise and the sample grids.

    `model` picks the family; only that family's section is used. BEGAN is the default because it
    is the model the thesis found to give the more robust, realistic faces.
    """

    model: str = "began"  # dcgan | began
    image_size: int = 64  # 32 | 64 | 128
    channels: int = 3
    latent_distribution: str = "uniform"  # uniform on [-1, 1] as in both papers, or normal
    seed: int = 0  # weight initialisation and the fixed visualisation noise
    num_samples: int = 64  # images in each fixed-noise sample grid
    interpolation_rows: int = 4  # latent interpolation strips per grid
    interpolation_steps: int = 8  # images per strip
    dcgan: DCGANConfig = field(default_factory=DCGANConfig)
    began: BEGANConfig = field(default_factory=BEGANConfig)

    def __post_init__(self) -> None:
        _check(self.model in GAN_MODELS, "model", f"unknown model {self.model!r}; choose one of {GAN_MODELS}")
        _check(self.image_size in SUPPORTED_SIZES, "image_size", f"must be one of {SUPPORTED_SIZES}, got {self.image_size}")
        _check(self.channels in (1, 3), "channels", f"must be 1 or 3, got {self.channels}")
        _check(self.latent_distribution in LATENT_DISTRIBUTIONS, "latent_distribution",
               f"must be one of {LATENT_DISTRIBUTIONS}, got {self.latent_distribution!r}")
        _check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        _check(self.interpolation_rows >= 0, "interpolation_rows", f"must be >= 0, got {self.interpolation_rows}")
        _check(self.interpolation_steps >= 2, "interpolation_steps", f"must be >= 2, got {self.interpolation_steps}")

    @property
    def latent_dim(self) -> int:
        """The noise size of the selected family."""
        return self.dcgan.latent_dim if self.model == "dcgan" else self.began.latent_dim

    def resolved(self) -> "GANConfig":
        """A copy with the paper defaults filled in for every field left at None / auto."""
        return dataclasses.replace(self, dcgan=self.dcgan.resolved(), began=self.began.resolved())


@dataclass
class GANDataConfig(SourceConfig):
    """The training faces: a source (synthetic by default), aligned at the GAN's resolution.

    `cache_dir` defaults to <out>/cache. `align: false` only centre-crops and resizes, for
    folders that already hold aligned faces.
    """

    split: str = "train"  # which split to train on; "all" uses every image
    flip: bool = True  # random horizontal flips (faces are near-symmetric; doubles the data)


def default_trainer() -> TrainerConfig:
    return TrainerConfig(
        out_dir="runs/gan", max_steps=2000, batch_size=64, ema_decay=0.999, ema_modules=("generator",),
        sample_every=250, checkpoint_every=500, log_every=10,
    )


@dataclass
class GANRunConfig:
    gan: GANConfig = field(default_factory=GANConfig)
    data: GANDataConfig = field(default_factory=GANDataConfig)
    trainer: TrainerConfig = field(default_factory=default_trainer)
