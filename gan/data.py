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


def _source_dataset(config: GANDataConfig, image_size: int, out_dir: Path):
    from data_prep.datasets.base import FaceDataset
    from data_prep.datasets.record import SampleRecord
    from data_prep.datasets.schema import LabelSchema
    from data_prep.images import list_images

    source = config.source.lower()
    if source == "synthetic":
        from data_prep.synthetic import SyntheticConfig, generate_synthetic, load_synthetic

        root = Path(config.root) if config.root else out_dir / "data" / "synthetic"
        synth = SyntheticConfig(
            num_identities=config.synthetic_identities,
            images_per_identity=config.synthetic_images_per_identity,
            image_size=max(64, image_size),
            seed=config.synthetic_seed,
        )
        generate_synthetic(root, synth)
        domain = None if config.synthetic_domain == "all" else config.synthetic_domain
        return load_synthetic(root, domain=domain)
    if not config.root:
        raise FaceganError(f"data source {config.source!r} needs a root folder (--root or data.root=...)")
    root = Path(config.root).expanduser()
    if source == "folder":
        if not root.is_dir():
            raise FaceganError(f"image folder not found: {root}")
        records = [SampleRecord(path=p) for p in list_images(root)]
        if not records:
            raise FaceganError(f"no files found below {root}")
        return FaceDataset("folder", records, LabelSchema(), root=root)
    from data_prep.datasets.registry import load_dataset

    return load_dataset(source, root)


def build_gan_dataset(config: GANDataConfig, image_size: int, out_dir: str | Path, progress: bool = True):
    """The aligned, cached training images (a Dataset of {"image": 3xSxS uint8, ...})."""
    from data_prep.cache import build_cache

    out_dir = Path(out_dir)
    dataset = _source_dataset(config, image_size, out_dir)
    if config.split != "all":
        if any(r.split is not None for r in dataset.records):
            dataset = dataset.subset(split=config.split)
        if len(dataset) == 0:
            raise FaceganError(f"{config.source}: no images in split {config.split!r} (use data.split=all)")
    aligner = None
    if config.align:
        from data_prep.align.aligner import AlignConfig, FaceAligner

        aligner = FaceAligner(AlignConfig(template=config.template, output_size=image_size))
    cache_dir = Path(config.cache_dir) if config.cache_dir else out_dir / "cache"
    cache = build_cache(dataset, cache_dir, size=image_size, aligner=aligner, progress=progress)
    if len(cache) == 0:
        raise FaceganError(f"no usable faces in {config.source} (see {cache_dir}/index.json for the reasons)")
    if cache.skipped:
        log.warning("%d image(s) left out of the GAN data (unreadable or no face); see %s/index.json", len(cache.skipped), cache_dir)
    if config.flip:
        cache.transform = RandomHorizontalFlip()
    return cache
