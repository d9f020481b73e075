"""Face-generator networks: DCGAN and BEGAN, one family per module, one factory per family."""
from __future__ import annotations

from typing import Any

from torch import nn

from gan.generators.models.began import BEGANDecoder, BEGANDiscriminator, BEGANEncoder, BEGANGenerator, build_began
from gan.generators.models.dcgan import DCGANDiscriminator, DCGANGenerator, build_dcgan, dcgan_init_
from gan.generators.models.latent import LATENT_DISTRIBUTIONS, sample_latent, slerp


__all__ = [
    "DCGANGenerator",
    "DCGANDiscriminator",
    "dcgan_init_",
    "build_dcgan",
    "BEGANEncoder",
    "BEGANDecoder",
    "BEGANGenerator",
    "BEGANDiscriminator",
    "build_began",
    "build_gan",
    "LATENT_DISTRIBUTIONS",
    "sample_latent",
    "slerp",
]


def build_gan(cfg: Any) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) of the family named by `cfg.model`."""
    if cfg.model == "dcgan":
        return build_dcgan(cfg)
    if cfg.model == "began":
        return build_began(cfg)
    raise ValueError(f"unknown GAN model {cfg.model!r}; choose dcgan or began")
