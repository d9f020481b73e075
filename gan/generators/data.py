"""Training images for the face generators, from any source, through the aligned-face cache.

Sources (`GANDataConfig`, a `data_prep.sources.SourceConfig`):
- "synthetic" (the default): the built-in procedural faces, generated on first use;
- any data_prep dataset name ("celeba", "lfw", "utkface", ...) with `root` its folder;
- "folder": every image below `root`.
Every source goes through `data_prep.sources.aligned_cache` once: faces are aligned by the MTCNN
aligner (or by the landmarks a dataset ships) at the GAN's resolution and stored as uint8
shards, so training epochs decode no JPEG and run no detector.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from data_prep.transforms import RandomHorizontalFlip
from engine.errors import FaceganError
from gan.generators.config import GANDataConfig

__all__ = ["build_gan_dataset"]


def build_gan_dataset(config: GANDataConfig, image_size: int, out_dir: str | Path, progress: bool = True):
    """The aligned, cached training images (a Dataset of {"image": 3xSxS uint8, ...})."""
    from data_prep.sources import aligned_cache, open_source

    out_dir = Path(out_dir)
    config = dataclasses.replace(config, cache_dir=config.cache_dir or str(out_dir / "cache"))
    dataset = open_source(config, out_dir, min_image_size=image_size, assign_splits=False)
    if config.split != "all" and any(r.split is not None for r in dataset.records):
        dataset = dataset.subset(split=config.split)
        if len(dataset) == 0:
            raise FaceganError(f"{config.source}: no images in split {config.split!r} (use data.split=all)")
    cache = aligned_cache(dataset, config, image_size, out_dir, progress=progress)
    if config.flip:
        cache.transform = RandomHorizontalFlip()
    return cache
