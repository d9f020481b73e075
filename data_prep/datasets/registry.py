"""Dataset readers by name, so configs and the command line can say `celeba` or `adience`.

Every reader has the signature `reader(root, split=None, **options) -> FaceDataset`.
"""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from data_prep.datasets.adience import load_adience
from data_prep.datasets.base import FaceDataset
from data_prep.datasets.celeba import load_celeba
from data_prep.datasets.chalearn import load_chalearn_lap, load_fotw
from data_prep.datasets.folder_csv import load_folder_csv
from data_prep.datasets.lfw import load_lfw
from data_prep.datasets.morph import load_morph
from data_prep.datasets.schema import TaskKind
from data_prep.datasets.textio import DatasetOptionError
from data_prep.datasets.utkface import load_utkface
from engine.errors import FaceganError

__all__ = ["DATASETS", "UnknownDatasetError", "available_datasets", "get_reader", "load_dataset", "read_dataset",
           "describe_dataset", "expected_face_fraction"]

def _load_synthetic(root: str | Path, split: str | None = None, *, domain: str | None = None) -> FaceDataset:
    """The built-in synthetic faces (`data_prep.synthetic`), imported on use: that module
    builds on this package, so importing it here at load time would be circular."""
    from data_prep.synthetic import load_synthetic

    return load_synthetic(root, domain=domain, split=split)


DATASETS: dict[str, Callable[..., FaceDataset]] = {
    "celeba": load_celeba,
    "lfw": load_lfw,
    "utkface": load_utkface,
    "morph": load_morph,
    "chalearn_lap": load_chalearn_lap,
    "fotw": load_fotw,
    "adience": load_adience,
    "folder_csv": load_folder_csv,
    "synthetic": _load_synthetic,
}
# Other names people use for the same readers.
_ALIASES = {
    "lfwa": "lfw",
    "lfw-a": "lfw",
    "morph2": "morph",
    "morph_ii": "morph",
    "chalearn": "chalearn_lap",
    "folder": "folder_csv",
    "csv": "folder_csv",
}

# Datasets whose default images are face crops: the smallest face's side as a fraction of the
# image's shorter side, with a margin (MTCNN boxes measured on ../shared/data: CelebA's aligned
# 178x218 crops 0.34-0.75 of the width, LFW's 250x250 0.35-0.5; UTKFace's 200x200 chips: the
# best face of all 7,209 found measured 0.53-1.0, 0.75 at the 1st percentile). The aligner then
# skips the small-face levels of its pyramid (AlignConfig.face_fraction); a face smaller than
# expected is still found, by a second pass over the whole pyramid. Not closer to the smallest
# faces: a face a little smaller than expected is found by a too-coarse level, with worse
# landmarks, rather than by the second pass (align_consistency --limit 1000: mean landmark
# disagreement 1.10 px at 0.3, 1.17 at 0.4, 1.24 at 0.5; no faster on UTKFace within noise).
_FACE_FRACTIONS = {"celeba": 0.3, "utkface": 0.3, "lfw": 0.25}


def expected_face_fraction(name: str) -> float:
    """How much of the frame the faces of dataset `name` fill at least (0.0: unknown)."""
    return _FACE_FRACTIONS.get(_ALIASES.get(name.lower(), name.lower()), 0.0)


class UnknownDatasetError(FaceganError, KeyError):
    """No reader is registered under this name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def available_datasets() -> list[str]:
    """The registered reader names (aliases not included), sorted."""
    return sorted(DATASETS)


def get_reader(name: str) -> Callable[..., FaceDataset]:
    """The reader registered as `name` (or one of its aliases, e.g. 'lfwa', 'morph2')."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return DATASETS[key]


def load_dataset(name: str, root: Path | str, **kwargs: Any) -> FaceDataset:
    """Read dataset `name` from `root`; `kwargs` go to its reader (e.g. split='test')."""
    return get_reader(name)(root, **kwargs)


def read_dataset(name: str, root: Path | str, split: str | None = None, options: dict[str, Any] | None = None) -> FaceDataset:
    """`load_dataset` with reader options checked against what the reader takes (the options of
    `facegan data info`), and `split` ("train", "val", "test") when given."""
    options = dict(options or {})
    if split is not None:
        options["split"] = split
    reader = get_reader(name)
    accepted = [p.name for p in inspect.signature(reader).parameters.values() if p.kind is p.KEYWORD_ONLY or p.name == "split"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetOptionError(f"dataset {name!r} has no option(s) {unknown}; it takes {accepted}")
    return load_dataset(name, root, **options)


def _task_line(dataset: FaceDataset, task_index: int) -> str:
    task = dataset.schema.tasks[task_index]
    values = [r.labels[task.name] for r in dataset.records if task.name in r.labels]
    head = f"  {task.name:<22} {task.kind.value:<11} labelled {len(values):>7}/{len(dataset)}"
    if not values:
        return head
    if task.kind is TaskKind.BINARY:
        return f"{head}  positive {100.0 * sum(values) / len(values):5.1f}%"
    if task.kind is TaskKind.REGRESSION:
        mean = sum(values) / len(values)
        return f"{head}  range {min(values):g}..{max(values):g}  mean {mean:.1f}"
    counts = Counter(int(v) for v in values)
    classes = ", ".join(f"{name} {counts.get(i, 0)}" for i, name in enumerate(task.classes))
    return f"{head}  {classes}"


def describe_dataset(dataset: FaceDataset, max_skipped: int = 10) -> str:
    """The multi-line summary `facegan data info` prints."""
    lines = [
        f"{dataset.name}: {len(dataset)} images, {len(dataset.identities())} identities, {len(dataset.schema)} tasks"
    ]
    if dataset.root is not None:
        lines.append(f"root: {dataset.root}")
    by_split: dict[str, list] = {}
    for record in dataset.records:
        by_split.setdefault(str(record.split), []).append(record)
    lines.append("splits:")
    for split in sorted(
        by_split,
        key=lambda s: ("train", "val", "test", "None").index(s) if s in ("train", "val", "test", "None") else 9,
    ):
        records = by_split[split]
        identities = {r.identity for r in records if r.identity is not None}
        lines.append(f"  {split:<6} {len(records):>7} images  {len(identities):>6} identities")
    folds = Counter(r.meta["fold"] for r in dataset.records if "fold" in r.meta)
    if folds:
        lines.append("folds: " + ", ".join(f"{fold}: {count}" for fold, count in sorted(folds.items())))
    lines.append("tasks:")
    lines.extend(_task_line(dataset, i) for i in range(len(dataset.schema)))
    lines.append(f"skipped: {len(dataset.skipped)}")
    for item in dataset.skipped[:max_skipped]:
        lines.append(f"  {item}")
    if len(dataset.skipped) > max_skipped:
        lines.append(f"  ... and {len(dataset.skipped) - max_skipped} more")
    return "\n".join(lines)
