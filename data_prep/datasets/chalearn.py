"""ChaLearn LAP apparent age (ICCV 2015, CVPR 2016) and Faces of the World (FotW, CVPR 2016).

No ground-truth file of either challenge is publicly mirrored; the formats below follow the
challenge pages and the code that reads them. What is assumed is marked so.

LAP apparent age -> task `Age` (regression in [0, 100], the mean of the voters' guesses);
`meta["age_std"]` holds their standard deviation when the file has one.
- CVPR 2016 (`train_gt.csv`, `valid_gt.csv`, `test_gt.csv`): comma-separated with the header
  `image,mean,stdv` (columns found by name; `age`/`apparent_age` and `std`/`sigma` are accepted
  as well).
- ICCV 2015 (`Train.csv`, `Validation.csv`, ...): semicolon-separated, no header,
  `image_2519.jpg;18` (the format of the track's `Predictions.csv`); an optional third field
  is read as the standard deviation (assumed: the 2015 ground truth carried one).
The delimiter is taken from the first line (`;`, then `,`, then tab, else whitespace) and a
header is recognised by a field that is a known column name. Every row must have as many fields as the
first one. Images: `<image dir>/<image>`; the image folders default to `train/` or `Train/`,
`valid/`, `Validation/` or `val/`, `test/` or `Test/` (else `root`).

FotW smile & gender (track 2) -> tasks `Male` (binary) and `Smiling` (binary). ASSUMED format
(no sample exists): one CSV per split, rows `image,gender,smile`, optionally with a header
naming those columns (then extra columns such as a face box are ignored and the columns may be
in any order; `image`/`file`/`filename`, `gender`, `smile`/`smiling`); without a header
exactly 3 fields. Delimiter sniffed as for LAP. gender: `male`/`m`/`0` -> Male 1,
`female`/`f`/`1` -> Male 0, `unsure`/`not sure`/`u`/`2` or empty -> no `Male` label for that
image (the image is kept for `Smiling`; `meta["gender_raw"]` keeps the value and the count is
logged). smile: `yes`/`y`/`1`/`true` -> 1, `no`/`n`/`0`/`false` -> 0, empty -> no label.
Default files (ASSUMED names): `train.csv`/`train_gender_smile.csv`/`train_labels.csv` and
likewise for `val`/`valid` and `test`, with images in the split folders as for LAP.

For both: `files={"train": ("train_gt.csv", "train"), ...}` names each split's label file and
image folder explicitly (paths relative to `root`). A listed image that is not on disk becomes
a `SkippedSample`; a malformed row raises `LabelFileError` with file and line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from data_prep.datasets.base import FaceDataset, require_dir
from data_prep.datasets.record import SPLITS, DatasetNotFoundError, LabelFileError, SampleRecord, SkippedSample
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from data_prep.datasets.textio import (
    DatasetOptionError,
    check_split_argument,
    list_file_names,
    read_label_lines,
    sniff_delimiter,
    split_fields,
)

__all__ = [
    "LapRow",
    "FotwRow",
    "read_lap_labels",
    "read_fotw_labels",
    "load_chalearn_lap",
    "load_fotw",
    "LAP_MAX_AGE",
]

log = logging.getLogger(__name__)

LAP_MAX_AGE = 100.0
_IMAGE_DIRS = {"train": ("train", "Train"), "val": ("valid", "Validation", "val"), "test": ("test", "Test")}
_LAP_FILES = {
    "train": ("train_gt.csv", "Train.csv", "train.csv"),
    "val": ("valid_gt.csv", "Validation.csv", "valid.csv", "val.csv"),
    "test": ("test_gt.csv", "Test.csv", "test.csv"),
}
_FOTW_FILES = {
    "train": ("train.csv", "train_gender_smile.csv", "train_labels.csv"),
    "val": ("val.csv", "valid.csv", "val_gender_smile.csv", "valid_gender_smile.csv", "val_labels.csv"),
    "test": ("test.csv", "test_gender_smile.csv", "test_labels.csv"),
}
_IMAGE_COLUMNS = ("image", "file", "filename", "file_name", "image_name", "img")
_MEAN_COLUMNS = ("mean", "age", "apparent_age")
_STD_COLUMNS = ("stdv", "std", "sigma", "stddev")
_GENDER_COLUMNS = ("gender", "sex")
_SMILE_COLUMNS = ("smile", "smiling")
_GENDERS = {"male": 1, "m": 1, "0": 1, "female": 0, "f": 0, "1": 0}
_UNSURE = {"unsure", "not sure", "u", "2", ""}
_SMILES = {"yes": 1, "y": 1, "1": 1, "true": 1, "smile": 1, "no": 0, "n": 0, "0": 0, "false": 0}


@dataclass(frozen=True)
class LapRow:
    line: int
    image: str
    mean: float
    std: float | None


@dataclass(frozen=True)
class FotwRow:
    line: int
    image: str
    labels: dict = field(default_factory=dict)
    gender_raw: str = ""


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _table(path: Path, header_names: Sequence[str]) -> tuple[int | None, list[str] | None, list[tuple[int, list[str]]]]:
    """(header line, header fields lower-cased or None, data rows as (line, fields)). The first
    line is a header when one of its fields is a known column name."""
    content = read_label_lines(path, strip=True)
    if not content.lines:
        raise LabelFileError(path, None, "the file is empty")
    delimiter = sniff_delimiter(content.lines[0][1], (";", ",", "\t"))
    rows = [(number, split_fields(line, delimiter)) for number, line in content.lines]
    first_line, first = rows[0]
    if any(f.strip().lower() in header_names for f in first):
        return first_line, [f.strip().lower() for f in first], rows[1:]
    return None, None, rows


def _column(
    header: list[str], names: Sequence[str], path: Path, line: int | None, what: str, required: bool = True
) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    if required:
        raise LabelFileError(path, line, f"header {header} has no {what} column (one of {list(names)})")
    return None


def read_lap_labels(path: Path | str) -> list[LapRow]:
    """Parse a LAP apparent-age file (either delimiter, with or without header)."""
    path = Path(path)
    header_line, header, rows = _table(path, _IMAGE_COLUMNS + _MEAN_COLUMNS + _STD_COLUMNS)
    if header is not None:
        image_at = _column(header, _IMAGE_COLUMNS, path, header_line, "image")
        mean_at = _column(header, _MEAN_COLUMNS, path, header_line, "mean age")
        std_at = _column(header, _STD_COLUMNS, path, header_line, "std", required=False)
        width = len(header)
    else:
        width = len(rows[0][1]) if rows else 2
        if width not in (2, 3):
            raise LabelFileError(path, rows[0][0], f"expected image;mean[;std] (2 or 3 fields), found {width}")
        image_at, mean_at, std_at = 0, 1, (2 if width == 3 else None)
    result: list[LapRow] = []
    seen: dict[str, int] = {}
    for number, fields in rows:
        if len(fields) != width:
            raise LabelFileError(path, number, f"expected {width} fields, found {len(fields)}")
        image = fields[image_at]
        if not image:
            raise LabelFileError(path, number, "empty image name")
        try:
            mean = float(fields[mean_at])
            std = float(fields[std_at]) if std_at is not None and fields[std_at] != "" else None
        except ValueError:
            raise LabelFileError(path, number, f"unparseable age value in {fields!r}") from None
        if not 0 <= mean <= LAP_MAX_AGE:
            raise LabelFileError(path, number, f"apparent age {mean} outside 0..{LAP_MAX_AGE:.0f}")
        if std is not None and (std < 0 or std != std):
            raise LabelFileError(path, number, f"negative or NaN standard deviation {std}")
        if image in seen:
            raise LabelFileError(path, number, f"{image} is listed twice (first at line {seen[image]})")
        seen[image] = number
        result.append(LapRow(number, image, mean, std))
    return result


def read_fotw_labels(path: Path | str) -> list[FotwRow]:
    """Parse a FotW smile & gender file in the assumed format (module docstring)."""
    path = Path(path)
    header_line, header, rows = _table(path, _IMAGE_COLUMNS + _GENDER_COLUMNS + _SMILE_COLUMNS)
    if header is not None:
        image_at = _column(header, _IMAGE_COLUMNS, path, header_line, "image")
        gender_at = _column(header, _GENDER_COLUMNS, path, header_line, "gender")
        smile_at = _column(header, _SMILE_COLUMNS, path, header_line, "smile")
        width = len(header)
    else:
        image_at, gender_at, smile_at, width = 0, 1, 2, 3
    result: list[FotwRow] = []
    seen: dict[str, int] = {}
    for number, fields in rows:
        if len(fields) != width:
            raise LabelFileError(path, number, f"expected {width} fields (image, gender, smile), found {len(fields)}")
        image, gender, smile = fields[image_at], fields[gender_at].strip().lower(), fields[smile_at].strip().lower()
        labels: dict[str, int] = {}
        if gender in _GENDERS:
            labels["Male"] = _GENDERS[gender]
        elif gender not in _UNSURE:
            raise LabelFileError(
                path, number, f"unknown gender {fields[gender_at]!r} (expected male, female or unsure; or 0, 1, 2)"
            )
        if smile in _SMILES:
            labels["Smiling"] = _SMILES[smile]
        elif smile != "":
            raise LabelFileError(
                path, number, f"unknown smile value {fields[smile_at]!r} (expected yes or no; or 1, 0)"
            )
        if image in seen:
            raise LabelFileError(path, number, f"{image} is listed twice (first at line {seen[image]})")
        seen[image] = number
        result.append(FotwRow(number, image, labels, fields[gender_at].strip()))
    return result


def _resolve_files(
    root: Path,
    files: Mapping[str, tuple[Path | str, Path | str]] | None,
    defaults: Mapping[str, Sequence[str]],
    what: str,
) -> list[tuple[str, Path, Path]]:
    found: list[tuple[str, Path, Path]] = []
    if files is not None:
        for split, (label, images) in files.items():
            if split not in SPLITS:
                raise DatasetOptionError(f"files keys must be in {SPLITS}, not {split!r}")
            label_path = root / label
            if not label_path.is_file():
                raise DatasetNotFoundError(f"{what} {split} label file not found: looked for {label_path}")
            found.append((split, label_path, require_dir(root / images, f"{what} {split} image folder")))
        return found
    for split, names in defaults.items():
        label_path = next((root / n for n in names if (root / n).is_file()), None)
        if label_path is None:
            continue
        image_dir = next((root / d for d in _IMAGE_DIRS[split] if (root / d).is_dir()), root)
        found.append((split, label_path, image_dir))
    if not found:
        looked = ", ".join(n for names in defaults.values() for n in names)
        raise DatasetNotFoundError(f"no {what} label file found in {root}: looked for {looked}; pass files=")
    return found


class _Listings:
    def __init__(self) -> None:
        self._cache: dict[Path, set[str]] = {}

    def has(self, folder: Path, relative: str) -> Path | None:
        path = folder / relative
        parent = path.parent
        if parent not in self._cache:
            self._cache[parent] = list_file_names(parent) if parent.is_dir() else set()
        return path if path.name in self._cache[parent] else None


def _rows_with_images(root: Path, split, files, defaults, what: str, read_labels, skipped: list[SkippedSample]):
    """(split name, image path, label row) for every row of the requested split(s) whose image
    exists; rows whose image is missing go to `skipped` with file, line and reason."""
    split = check_split_argument(split)
    require_dir(root, f"{what} root folder")
    listings = _Listings()
    for split_name, label_path, image_dir in _resolve_files(root, files, defaults, what):
        if split is not None and split_name != split:
            continue
        for row in read_labels(label_path):
            image = listings.has(image_dir, row.image)
            if image is None:
                skipped.append(SkippedSample(str(label_path), row.line, f"image {row.image} not found in {image_dir}"))
                continue
            yield split_name, image, row


def load_chalearn_lap(
    root: Path | str,
    split: str | None = None,
    *,
    files: Mapping[str, tuple[Path | str, Path | str]] | None = None,
    transform: Callable | None = None,
) -> FaceDataset:
    """Read ChaLearn LAP apparent age (official train/val/test from the per-split files)."""
    root = Path(root)
    records: list[SampleRecord] = []
    skipped: list[SkippedSample] = []
    for split_name, image, row in _rows_with_images(root, split, files, _LAP_FILES, "ChaLearn LAP", read_lap_labels, skipped):
        meta = {"age_std": row.std} if row.std is not None else {}
        records.append(SampleRecord(image, {"Age": row.mean}, None, split_name, meta))
    schema = LabelSchema(
        (Task("Age", TaskKind.REGRESSION, value_range=(0.0, LAP_MAX_AGE), description="apparent age (mean of votes)"),)
    )
    return FaceDataset("chalearn_lap", records, schema, skipped, transform, root)


def load_fotw(
    root: Path | str,
    split: str | None = None,
    *,
    files: Mapping[str, tuple[Path | str, Path | str]] | None = None,
    transform: Callable | None = None,
) -> FaceDataset:
    """Read ChaLearn FotW smile & gender in the assumed format (module docstring)."""
    root = Path(root)
    records: list[SampleRecord] = []
    skipped: list[SkippedSample] = []
    unsure = 0
    for split_name, image, row in _rows_with_images(root, split, files, _FOTW_FILES, "ChaLearn FotW", read_fotw_labels, skipped):
        unsure += "Male" not in row.labels
        records.append(SampleRecord(image, dict(row.labels), None, split_name, {"gender_raw": row.gender_raw}))
    if unsure:
        log.info("fotw: %d image(s) with gender 'unsure' or empty have no Male label", unsure)
    schema = LabelSchema(
        (
            Task("Male", TaskKind.BINARY, description="gender male (unsure -> unlabelled)"),
            Task("Smiling", TaskKind.BINARY, description="smile yes"),
        )
    )
    return FaceDataset("fotw", records, schema, skipped, transform, root)
