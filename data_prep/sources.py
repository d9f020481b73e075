"""From "where the faces are" to aligned, cached, labelled faces: the one path every trainer uses.

A *source* is a name plus a folder:
- "synthetic": the built-in procedural faces, generated on first use (no files needed);
- "folder": every image below `root`, unlabelled;
- any data_prep dataset name ("celeba", "lfw", "utkface", "morph", "adience", ...).

`open_source` reads it as a `FaceDataset` (optionally re-split by identity), and
`aligned_cache` aligns it once with the MTCNN aligner (or the landmarks a dataset ships) into
an `AlignedFaceCache`, so that training epochs decode no JPEG and run no detector. Generators,
super-resolution and attribute models all go through these two functions.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import FaceganError

__all__ = ["DATA_ENV", "SourceConfig", "LATER_SOURCE_DEFAULTS", "open_source", "source_root", "aligned_cache", "SourceError"]

DATA_ENV = "FACEGAN_DATA"  # a folder holding datasets by name (celeba/, lfw/, ...): where an empty root looks

log = logging.getLogger(__name__)


class SourceError(FaceganError, ValueError):
    """A data source cannot be opened as asked."""


@dataclass
class SourceConfig:
    """Where faces come from and how they are normalised."""

    source: str = "synthetic"  # synthetic | folder | a data_prep dataset name (celeba, lfw, utkface, ...)
    # dataset root or image folder (default $FACEGAN_DATA/<source>); for synthetic, where to generate
    # (default <out>/data/synthetic)
    root: str = ""
    align: bool = True  # False: images are already aligned; only centre-crop and resize
    template: str = "thesis"  # aligner template (see `facegan align --help`)
    cache_dir: str = ""  # where the aligned cache goes (default <out>/cache/<source>)
    test_fraction: float = 0.0  # > 0: replace the dataset's split by an identity-disjoint one holding out this share of people
    val_fraction: float = 0.0  # with test_fraction: the share of people held out for validation
    split_seed: int = 0  # seed of that identity-disjoint split
    folds: int = 0  # >= 2: k-fold over people instead: fold `fold` of the shuffled people is the test split
    fold: int = 0  # which fold is tested (0 .. folds-1); val_fraction of the other people is validation
    synthetic_identities: int = 500
    synthetic_images_per_identity: int = 4
    synthetic_domain: str = "studio"  # studio | wild | all
    synthetic_seed: int = 0


# Source options added after runs and caches had recorded their configs, with their defaults: left
# out of run records and fingerprints while at the default (`engine.config.without_later_defaults`),
# so that those runs resume and those caches are reused.
LATER_SOURCE_DEFAULTS = {"folds": 0, "fold": 0}


def open_source(config: SourceConfig, out_dir: str | Path, min_image_size: int = 64, assign_splits: bool = True):
    """The source as a `FaceDataset`. With `assign_splits`, records without a split (a plain
    folder, say) get a seeded identity-disjoint one; otherwise they keep split None."""
    from data_prep.datasets.base import FaceDataset
    from data_prep.datasets.record import SampleRecord
    from data_prep.datasets.schema import LabelSchema
    from data_prep.datasets.splits import ensure_splits, resplit_by_identity, resplit_kfold
    from data_prep.images import list_images

    out_dir = Path(out_dir)
    source = config.source.lower()
    if source == "synthetic":
        from data_prep.synthetic import DOMAINS, SyntheticConfig, generate_synthetic, load_synthetic

        if config.synthetic_domain != "all" and config.synthetic_domain not in DOMAINS:
            raise SourceError(f"synthetic_domain must be 'all' or one of {DOMAINS}, not {config.synthetic_domain!r}")
        root = Path(config.root) if config.root else out_dir / "data" / "synthetic"
        synth = SyntheticConfig(
            num_identities=config.synthetic_identities,
            images_per_identity=config.synthetic_images_per_identity,
            image_size=max(64, min_image_size),
            seed=config.synthetic_seed,
        )
        generate_synthetic(root, synth)
        domain = None if config.synthetic_domain == "all" else config.synthetic_domain
        dataset = load_synthetic(root, domain=domain)
    else:
        root = source_root(config)
        if source == "folder":
            if not root.is_dir():
                raise SourceError(f"image folder not found: {root}")
            records = [SampleRecord(path=p) for p in list_images(root)]
            if not records:
                raise SourceError(f"no files found below {root}")
            dataset = FaceDataset("folder", records, LabelSchema(), root=root)
        else:
            from data_prep.datasets.registry import load_dataset

            dataset = load_dataset(source, root)
    if config.folds:
        if config.test_fraction > 0:
            raise SourceError("give test_fraction or folds, not both: with folds the test people are one fold")
        if config.folds < 2 or not 0 <= config.fold < config.folds:
            raise SourceError(f"folds must be >= 2 and 0 <= fold < folds, got fold {config.fold} of {config.folds}")
        dataset = resplit_kfold(dataset, config.folds, config.fold, val_fraction=config.val_fraction, seed=config.split_seed)
    elif config.test_fraction > 0:
        if not 0 < config.test_fraction + config.val_fraction < 1:
            raise SourceError(f"test_fraction + val_fraction must lie in (0, 1), got {config.test_fraction} + {config.val_fraction}")
        dataset = resplit_by_identity(dataset, config.test_fraction, val_fraction=config.val_fraction, seed=config.split_seed)
    elif assign_splits and dataset.records and any(r.split is None for r in dataset.records):
        dataset = ensure_splits(dataset, seed=config.split_seed)
    return dataset


def source_root(config: SourceConfig) -> Path:
    """The folder of a dataset source: `root`, else $FACEGAN_DATA/<source> when that exists.

    Made absolute (symbolic links kept), so that the records' paths, and with them the aligned
    cache's fingerprint, are the same however the folder is spelled: `../data/celeba` from one
    command and `/home/me/data/celeba` from another share one cache instead of each rebuilding it."""
    if config.root:
        return Path(os.path.abspath(Path(config.root).expanduser()))
    shared = os.environ.get(DATA_ENV)
    if shared and config.source.lower() != "folder" and (Path(shared).expanduser() / config.source).is_dir():
        return Path(os.path.abspath(Path(shared).expanduser() / config.source))
    hint = "" if config.source.lower() == "folder" else f", or set ${DATA_ENV} to a folder that holds {config.source}/"
    raise SourceError(f"data source {config.source!r} needs its folder: give --root DIR (or --dataset "
                      f"{config.source}=DIR, or set ...root=DIR){hint}")


def aligned_cache(dataset, config: SourceConfig, size: int, out_dir: str | Path, progress: bool = True):
    """Align and cache `dataset` at size x size (reused when up to date); returns the cache."""
    from data_prep.cache import build_cache
    from engine.file_lock import exclusive_lock

    aligner = None
    if config.align:
        from data_prep.align.aligner import AlignConfig, FaceAligner

        aligner = FaceAligner(AlignConfig(template=config.template, output_size=size))
    cache_dir = Path(config.cache_dir) if config.cache_dir else Path(out_dir) / "cache" / f"{dataset.name}-{size}"
    # torchrun's ranks (and runs sharing a cache folder) each get here: the first builds, the
    # others wait and find the cache up to date.
    with exclusive_lock(cache_dir.parent / f".{cache_dir.name}.lock", what=f"the aligned cache {cache_dir}"):
        cache = build_cache(dataset, cache_dir, size=size, aligner=aligner, progress=progress)
    if len(cache) == 0:
        raise SourceError(f"no usable faces in {config.source} (see {cache_dir}/index.json for the reasons)")
    if cache.skipped:
        log.warning("%d image(s) of %s left out (unreadable or no face); see %s/index.json",
                    len(cache.skipped), config.source, cache_dir)
    return cache
