"""Training images for the face generators, from any source, through the aligned-face cache.

Sources:
- "synthetic" (the default): the built-in procedural faces, generated on first use;
- any data_prep dataset name ("celeba", "lfw", "utkface", ...) with `root` its folder;
- "folder": every image below `root`.
Every source goes through `data_prep.cache.build_cache` once: faces are aligned by the MTCNN
aligner (or by the landmarks a dataset ships) at the GAN's resolution and stored as uint8
shards, so training epochs decode no JPEG and run no detector. `align: false` only
centre-crops and resizes, for folders that already hold aligned faces.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import FaceganError

__all__ = ["GANDataConfig", "build_gan_dataset", "RandomHorizontalFlip"]

log = logging.getLogger(__name__)


@dataclass
class GANDataConfig:
    source: str = "synthetic"  # synthetic | folder | a data_prep dataset name (celeba, lfw, utkface, ...)
    root: str = ""  # dataset root or image folder; for synthetic, where to generate (default <out>/data)
    split: str = "train"  # which split to train on; "all" uses every image
    align: bool = True  # False: images are already aligned; only centre-crop and resize
    template: str = "thesis"  # aligner template (see `facegan align --help`)
    cache_dir: str = ""  # where the aligned cache goes (default <out>/cache)
    flip: bool = True  # random horizontal flips (faces are near-symmetric; doubles the data)
    synthetic_identities: int = 500
    synthetic_images_per_identity: int = 4
    synthetic_domain: str = "studio"  # studio | wild | all
    synthetic_seed: int = 0


class RandomHorizontalFlip:
    """Flip a 3xHxW image with probability 1/2, drawing from torch's global RNG so that the
    Trainer's RNG capture makes a resumed run flip exactly as an uninterrupted one."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(-1) if torch.rand(()) < 0.5 else image


def _source_config(config: GANDataConfig, out_dir: Path):
    from data_prep.sources import SourceConfig

    return SourceConfig(
        source=config.source, root=config.root, align=config.align, template=config.template,
        cache_dir=config.cache_dir or str(out_dir / "cache"),
        synthetic_identities=config.synthetic_identities,
        synthetic_images_per_identity=config.synthetic_images_per_identity,
        synthetic_domain=config.synthetic_domain, synthetic_seed=config.synthetic_seed,
    )


def build_gan_dataset(config: GANDataConfig, image_size: int, out_dir: str | Path, progress: bool = True):
    """The aligned, cached training images (a Dataset of {"image": 3xSxS uint8, ...})."""
    from data_prep.sources import aligned_cache, open_source

    out_dir = Path(out_dir)
    source = _source_config(config, out_dir)
    dataset = open_source(source, out_dir, min_image_size=image_size, assign_splits=False)
    if config.split != "all" and any(r.split is not None for r in dataset.records):
        dataset = dataset.subset(split=config.split)
        if len(dataset) == 0:
            raise FaceganError(f"{config.source}: no images in split {config.split!r} (use data.split=all)")
    cache = aligned_cache(dataset, source, image_size, out_dir, progress=progress)
    if config.flip:
        cache.transform = RandomHorizontalFlip()
    return cache
