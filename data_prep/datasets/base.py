"""`FaceDataset`: what every reader returns, usable directly as a torch Dataset.

Readers parse label files into `SampleRecord`s; this class holds them with the reader's
`LabelSchema`, the list of samples that were skipped (and why), and turns a record into
tensors on indexing. Multi-task batches need a fixed layout even when a sample lacks some
labels, so `__getitem__` returns a target vector in schema order plus a mask of which entries
are present.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch.utils.data import Dataset

from data_prep.datasets.record import SPLITS, DatasetNotFoundError, SampleRecord, SkippedSample
from data_prep.datasets.schema import LabelSchema
from data_prep.images import load_rgb

__all__ = ["FaceDataset", "encode_labels", "require_file", "require_dir", "sniff_html"]

log = logging.getLogger(__name__)


def encode_labels(labels: dict[str, int | float], schema: LabelSchema) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, mask): float32 values in schema order, and which of them are known."""
    targets = torch.zeros(len(schema), dtype=torch.float32)
    mask = torch.zeros(len(schema), dtype=torch.bool)
    for i, task in enumerate(schema):
        if task.name in labels:
            targets[i] = float(labels[task.name])
            mask[i] = True
    return targets, mask


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetNotFoundError(f"{what} not found: looked for {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetNotFoundError(f"{what} not found: looked for the folder {path}")
    return path


def sniff_html(path: Path) -> None:
    """Refuse a label file that is really a saved web page (a failed Google-Drive download)."""
    with open(path, "rb") as handle:
        head = handle.read(2048).lstrip().lower()
    if head.startswith(b"<!doctype html") or head.startswith(b"<html"):
        from data_prep.datasets.record import LabelFileError

        raise LabelFileError(path, 1, "this is an HTML page, not a label file (a failed download?); download it again")


class FaceDataset(Dataset):
    """Records + schema. Indexing loads the image (HxWx3 uint8 -> 3xHxW uint8 tensor, then
    `transform`) and returns {"image", "targets", "mask", "index"}."""

    def __init__(
        self,
        name: str,
        records: Sequence[SampleRecord],
        schema: LabelSchema,
        skipped: Iterable[SkippedSample] = (),
        transform: Callable | None = None,
        root: Path | None = None,
    ):
        self.name = name
        self.records = list(records)
        self.schema = schema
        self.skipped = list(skipped)
        self.transform = transform
        self.root = root
        for record in self.records:
            if record.split is not None and record.split not in SPLITS:
                raise ValueError(f"{name}: record {record.path} has unknown split {record.split!r}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = torch.from_numpy(load_rgb(record.path)).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        targets, mask = encode_labels(record.labels, self.schema)
        return {"image": image, "targets": targets, "mask": mask, "index": index}

    def subset(self, split: str | None = None, keep: Callable[[SampleRecord], bool] | None = None) -> "FaceDataset":
        """A new dataset with the records of one split and/or those passing `keep`."""
        records = [
            r for r in self.records if (split is None or r.split == split) and (keep is None or keep(r))
        ]
        return FaceDataset(self.name, records, self.schema, self.skipped, self.transform, self.root)

    def with_records(self, records: Sequence[SampleRecord]) -> "FaceDataset":
        return FaceDataset(self.name, records, self.schema, self.skipped, self.transform, self.root)

    def split_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[str(r.split)] = counts.get(str(r.split), 0) + 1
        return counts

    def identities(self) -> set[str]:
        return {r.identity for r in self.records if r.identity is not None}

    def report_skipped(self, limit: int = 10) -> None:
        """Log how many samples were skipped, with the first few reasons."""
        if not self.skipped:
            return
        log.warning("%s: skipped %d sample(s)", self.name, len(self.skipped))
        for item in self.skipped[:limit]:
            log.warning("  %s", item)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.split_counts().items()))
        return (
            f"{self.name}: {len(self)} images, {len(self.identities())} identities, "
            f"{len(self.schema)} tasks, splits [{counts}], skipped {len(self.skipped)}"
        )

    def __repr__(self) -> str:
        return f"FaceDataset({self.summary()})"
