"""The common sample record every reader yields, and the errors readers raise."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import FaceganError

__all__ = ["SampleRecord", "LabelFileError", "DatasetNotFoundError", "SkippedSample", "SPLITS"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SampleRecord:
    """One image and what is known about it.

    `labels` maps task names (see the reader's `LabelSchema`) to values; a task with no label
    for this image is absent. `identity` is a dataset-scoped person id when known, `split`
    one of SPLITS when the dataset defines it. `meta` carries reader-specific extras (the
    Adience face box, the MORPH date of birth) that no model relies on.
    """

    path: Path
    labels: dict[str, int | float] = field(default_factory=dict)
    identity: str | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.path.name

    def with_split(self, split: str | None) -> "SampleRecord":
        return SampleRecord(self.path, self.labels, self.identity, split, self.meta)

    def to_row(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "identity": self.identity,
            "split": self.split,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class SkippedSample:
    """A sample a reader dropped, with where it came from and why (e.g. image missing)."""

    source: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.reason}"


class LabelFileError(FaceganError, ValueError):
    """A label file is malformed. The message names the file and the 1-based line."""

    def __init__(self, path: Path | str, line: int | None, message: str):
        self.path = Path(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class DatasetNotFoundError(FaceganError, FileNotFoundError):
    """A required file or folder of a dataset is missing; says what and where it looked."""
