"""An attribute run's faces: each dataset opened, deduplicated, aligned into its cache, and split.

`prepare_datasets` gives every training dataset its (train, val, test) views; `open_split`
opens one split the same way for evaluation and verification, so that evaluation reads exactly
the faces, split and cache that training did.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attributes.config import ALL_FACES, DatasetEntry
from data_prep.datasets.schema import LabelSchema
from data_prep.sources import aligned_cache, open_source
from engine.errors import FaceganError

__all__ = ["DatasetSplits", "aligned_faces", "split_views", "prepare_datasets", "open_split", "AGE_TASK", "AGE_GROUP_TASK"]

AGE_TASK, AGE_GROUP_TASK = "Age", "AgeGroup"  # DatasetEntry.age_groups cuts the first into the second

log = logging.getLogger(__name__)


@dataclass
class DatasetSplits:
    name: str
    train: Any  # AlignedFaceCache views
    val: Any
    test: Any
    schema: LabelSchema


def aligned_faces(entry: DatasetEntry, size: int, out_dir: str | Path, progress: bool = True):
    """The dataset of `entry` aligned into its cache at `size` px (exact duplicates dropped when
    `entry.dedupe` and the reader marks them), with its age groups when `entry.age_groups`."""
    dataset = open_source(entry, out_dir, min_image_size=size)
    if getattr(entry, "dedupe", True) and any(r.meta and "duplicate_group" in r.meta for r in dataset.records):
        from data_prep.datasets.utkface import deduplicate

        dataset = dataset.with_records(deduplicate(dataset.records, drop_conflicting=True))
    cache = aligned_cache(dataset, entry, size, Path(out_dir), progress=progress)
    if getattr(entry, "age_groups", None):
        cache = cache.with_value_groups(AGE_TASK, entry.age_groups, AGE_GROUP_TASK)
    return cache


def split_views(cache, train_split: str):
    """The (train, val, test) views of `cache`. With train_split "all" every face trains and
    nothing is held out, since validating on training faces would mislead."""
    if train_split == ALL_FACES:
        nothing = cache.subset(keep=lambda record: False)
        return cache.subset(), nothing, nothing
    return cache.subset(split=train_split), cache.subset(split="val"), cache.subset(split="test")


def prepare_datasets(datasets: dict[str, DatasetEntry], size: int, out_dir: str | Path,
                     progress: bool = True) -> dict[str, DatasetSplits]:
    """Open, align and cache every dataset; split each into train/val/test views."""
    prepared = {}
    for name, entry in datasets.items():
        cache = aligned_faces(entry, size, out_dir, progress)
        train_view = split_views(cache, entry.train_split)[0]
        if len(train_view) == 0:
            raise FaceganError(f"dataset {name!r} ({entry.source}) has no faces in split {entry.train_split!r}")
        if entry.identity:
            people = sorted(train_view.identities())
            if len(people) < 2:
                raise FaceganError(f"dataset {name!r}: an identity task needs at least 2 people in split "
                                   f"{entry.train_split!r}, found {len(people)} (does {entry.source} have identities?)")
            cache = cache.with_identity_task(people)
        prepared[name] = DatasetSplits(name, *split_views(cache, entry.train_split), cache.schema)
        log.info("%s: train %d, val %d, test %d faces", name, len(prepared[name].train), len(prepared[name].val),
                 len(prepared[name].test))
    return prepared


def open_split(entry: DatasetEntry, size: int, split: str, work_dir: str | Path):
    """One split ("train", "val", "test" or "all") of a dataset, as training opened it."""
    cache = aligned_faces(entry, size, work_dir, progress=False)
    return cache if split == "all" else cache.subset(split=split)
