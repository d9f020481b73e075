"""Adience (Eidinger, Enbar & Hassner 2014): age group and gender, 5-fold protocol.

Label files `fold_0_data.txt` .. `fold_4_data.txt` (in `root` or `root/folds/`): tab-separated,
no quoting, a header of 12 columns

    user_id  original_image  face_id  age  gender  x  y  dx  dy  tilt_ang  fiducial_yaw_angle  fiducial_score

CRLF and LF copies both circulate, and the last line has no newline. Every row has exactly 12
fields.

`age` -> ordinal task `Age_group` over the 8 official bins (index 0..7)
    (0, 2)  (4, 6)  (8, 12)  (15, 20)  (25, 32)  (38, 43)  (48, 53)  (60, 100)
- an official bin maps to itself;
- `None` (or empty) -> no age label;
- a bare integer (`2 3 13 22 23 34 35 36 42 45 55 56 57 58` occur) -> the bin that contains it,
  else the bin with the nearest edge, ties going to the younger bin: 3 -> (0, 2), 7 -> (4, 6),
  13 -> (8, 12), 14 -> (15, 20), 21-22 -> (15, 20), 23-24 -> (25, 32), 33-35 -> (25, 32),
  36-37 -> (38, 43), 44-45 -> (38, 43), 46-47 -> (48, 53), 54-56 -> (48, 53), 57-59 -> (60, 100);
- an off-grid range `(a, b)` (`(38, 48)`, `(38, 42)`, `(8, 23)`, `(27, 32)` occur) -> the bin of
  its midpoint by the same rule: (38, 48) -> 43 -> (38, 43); (38, 42) -> (38, 43);
  (8, 23) -> 15.5 -> (15, 20); (27, 32) -> (25, 32).
The value as written is kept in `meta["age_raw"]`.

`gender`: `m` -> Male 1, `f` -> Male 0, `u` or empty -> no `Male` label.

Images: `faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>` (the `faces`
archive) or `aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>` (the
`aligned` archive); `images="auto"` takes `aligned/` when present, else `faces/`. One listing
per user folder. identity = `<user_id>/<face_id>` (face_id is a person within an album).
`meta`: `fold`, `bbox` = [x, y, dx, dy], `tilt_ang`, `fiducial_yaw_angle`, `fiducial_score`,
`original_image`.

Splits: Adience is evaluated by 5-fold cross-validation, so by default `split` is None and
`meta["fold"]` says the fold. `test_fold=k` makes fold k the test split and the others train
(`val_fold` optionally one of them val).

Errors: the public copies of folds 2-4 are truncated mid-record. A final line with fewer than
12 fields, or whose numeric fields do not parse, is reported as a `SkippedSample` naming the
file and line (a truncation that happens to leave 12 well-formed fields cannot be detected).
Any other malformed row (wrong field count, unknown age or gender value, non-integer box)
raises `LabelFileError` with file and line. A row whose image is not on disk is a
`SkippedSample`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from data_prep.datasets.base import FaceDataset, require_dir
from data_prep.datasets.record import DatasetNotFoundError, LabelFileError, SampleRecord, SkippedSample
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from data_prep.datasets.textio import DatasetOptionError, check_split_argument, list_file_names, read_label_lines

__all__ = [
    "ADIENCE_AGE_BINS",
    "ADIENCE_AGE_CLASSES",
    "ADIENCE_COLUMNS",
    "AdienceRow",
    "adience_age_group",
    "read_adience_fold",
    "load_adience",
]

ADIENCE_AGE_BINS: tuple[tuple[int, int], ...] = (
    (0, 2),
    (4, 6),
    (8, 12),
    (15, 20),
    (25, 32),
    (38, 43),
    (48, 53),
    (60, 100),
)
ADIENCE_AGE_CLASSES = tuple(f"{low}-{high}" for low, high in ADIENCE_AGE_BINS)
ADIENCE_COLUMNS = (
    "user_id", "original_image", "face_id", "age", "gender", "x", "y", "dx", "dy",
    "tilt_ang", "fiducial_yaw_angle", "fiducial_score",
)  # fmt: skip
_RANGE = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_GENDERS = {"m": 1, "f": 0, "u": None, "": None}
_PREFIXES = {"faces": "coarse_tilt_aligned_face", "aligned": "landmark_aligned_face"}
_INTEGER_COLUMNS = ("x", "y", "dx", "dy", "tilt_ang", "fiducial_yaw_angle", "fiducial_score")


def _nearest_bin(age: float) -> int:
    best, best_distance = 0, float("inf")
    for index, (low, high) in enumerate(ADIENCE_AGE_BINS):
        distance = 0.0 if low <= age <= high else min(abs(age - low), abs(age - high))
        if distance < best_distance:  # strict: a tie keeps the younger bin
            best, best_distance = index, distance
    return best


_MAX_AGE = 130  # past any recorded human age: a damaged field, not a person


def adience_age_group(value: str) -> int | None:
    """Bin index for an Adience `age` field (module docstring for the rule); None for `None`
    or empty; ValueError for anything else."""
    token = value.strip()
    if token in ("None", ""):
        return None
    match = _RANGE.fullmatch(token)
    if match is not None:
        low, high = int(match.group(1)), int(match.group(2))
        if high > _MAX_AGE:
            raise ValueError(f"age range {token!r} goes past {_MAX_AGE} years")
        if (low, high) in ADIENCE_AGE_BINS:
            return ADIENCE_AGE_BINS.index((low, high))
        if low > high:
            raise ValueError(f"age range {token!r} has low > high")
        return _nearest_bin((low + high) / 2.0)
    if token.isascii() and token.isdigit():
        if int(token) > _MAX_AGE:
            raise ValueError(f"age {token!r} is past {_MAX_AGE} years")
        return _nearest_bin(int(token))
    raise ValueError(f"unknown age value {token!r}")


@dataclass(frozen=True)
class AdienceRow:
    line: int
    user_id: str
    original_image: str
    face_id: str
    age_group: int | None
    male: int | None
    meta: dict


def read_adience_fold(path: Path | str) -> tuple[list[AdienceRow], list[SkippedSample]]:
    """Parse one `fold_k_data.txt`: its rows, and the truncated final row if any."""
    path = Path(path)
    content = read_label_lines(path)
    lines = content.lines
    if not lines:
        raise LabelFileError(path, None, "the file is empty")
    header_number, header = lines[0]
    columns = [c.strip() for c in header.split("\t")]
    if tuple(columns) != ADIENCE_COLUMNS:
        raise LabelFileError(path, header_number, f"expected the 12-column Adience header, found {columns}")
    rows: list[AdienceRow] = []
    skipped: list[SkippedSample] = []
    last = lines[-1][0]
    for number, line in lines[1:]:
        try:
            rows.append(_parse_row(path, number, line))
        except LabelFileError as exc:
            if number != last:
                raise
            skipped.append(SkippedSample(str(path), number, f"truncated last line, ignored ({exc.reason})"))
    return rows, skipped


def _parse_row(path: Path, number: int, line: str) -> AdienceRow:
    fields = line.split("\t")
    if len(fields) != len(ADIENCE_COLUMNS):
        raise LabelFileError(path, number, f"expected {len(ADIENCE_COLUMNS)} tab-separated fields, found {len(fields)}")
    fields = [f.strip() for f in fields]
    row = dict(zip(ADIENCE_COLUMNS, fields))
    for name in ("user_id", "original_image", "face_id"):
        if not row[name]:
            raise LabelFileError(path, number, f"empty {name}")
    try:
        age_group = adience_age_group(row["age"])
    except ValueError as exc:
        raise LabelFileError(path, number, str(exc)) from None
    gender = row["gender"].lower()
    if gender not in _GENDERS:
        raise LabelFileError(path, number, f"unknown gender {row['gender']!r} (expected m, f, u or empty)")
    numbers: dict[str, int] = {}
    for name in _INTEGER_COLUMNS:
        try:
            numbers[name] = int(row[name])
        except ValueError:
            raise LabelFileError(path, number, f"non-integer {name} {row[name]!r}") from None
    meta = {
        "bbox": [numbers["x"], numbers["y"], numbers["dx"], numbers["dy"]],
        "tilt_ang": numbers["tilt_ang"],
        "fiducial_yaw_angle": numbers["fiducial_yaw_angle"],
        "fiducial_score": numbers["fiducial_score"],
        "original_image": row["original_image"],
        "age_raw": row["age"],
    }
    return AdienceRow(number, row["user_id"], row["original_image"], row["face_id"], age_group, _GENDERS[gender], meta)


def _fold_files(root: Path) -> list[tuple[int, Path]]:
    found = []
    for fold in range(5):
        for folder in (root, root / "folds"):
            path = folder / f"fold_{fold}_data.txt"
            if path.is_file():
                found.append((fold, path))
                break
    if not found:
        raise DatasetNotFoundError(
            f"no Adience fold files found: looked for fold_0_data.txt .. fold_4_data.txt in {root} and {root / 'folds'}"
        )
    return found


def _image_root(root: Path, images: str) -> tuple[Path, str]:
    if images == "auto":
        images = "aligned" if (root / "aligned").is_dir() else "faces"
    if images not in _PREFIXES:
        raise DatasetOptionError(f"images must be 'auto', 'aligned' or 'faces', not {images!r}")
    return require_dir(root / images, f"Adience {images} images"), _PREFIXES[images]


def load_adience(
    root: Path | str,
    split: str | None = None,
    *,
    images: str = "auto",
    test_fold: int | None = None,
    val_fold: int | None = None,
    folds: Sequence[int] | None = None,
    transform: Callable | None = None,
) -> FaceDataset:
    """Read Adience (see the module docstring). `folds` restricts which fold files are read."""
    root = Path(root)
    split = check_split_argument(split)
    require_dir(root, "Adience root folder")
    if split is not None and test_fold is None:
        raise DatasetOptionError(
            "Adience has no fixed split: pass test_fold (0-4) to choose the 5-fold protocol's test fold"
        )
    for name, value in (("test_fold", test_fold), ("val_fold", val_fold)):
        if value is not None and value not in range(5):
            raise DatasetOptionError(f"{name} must be 0..4, not {value!r}")
    if val_fold is not None and (test_fold is None or val_fold == test_fold):
        raise DatasetOptionError("val_fold needs a different test_fold")
    image_root, prefix = _image_root(root, images)

    listings: dict[str, set[str]] = {}
    records: list[SampleRecord] = []
    skipped: list[SkippedSample] = []
    for fold, path in _fold_files(root):
        if folds is not None and fold not in folds:
            continue
        rows, truncated = read_adience_fold(path)
        skipped.extend(truncated)
        row_split = None
        if test_fold is not None:
            row_split = "test" if fold == test_fold else "val" if fold == val_fold else "train"
        if split is not None and row_split != split:
            continue
        for row in rows:
            if row.user_id not in listings:
                folder = image_root / row.user_id
                listings[row.user_id] = list_file_names(folder) if folder.is_dir() else set()
            name = f"{prefix}.{row.face_id}.{row.original_image}"
            if name not in listings[row.user_id]:
                skipped.append(
                    SkippedSample(str(path), row.line, f"image {row.user_id}/{name} not found in {image_root}")
                )
                continue
            labels: dict[str, int] = {}
            if row.age_group is not None:
                labels["Age_group"] = row.age_group
            if row.male is not None:
                labels["Male"] = row.male
            records.append(
                SampleRecord(
                    path=image_root / row.user_id / name,
                    labels=labels,
                    identity=f"{row.user_id}/{row.face_id}",
                    split=row_split,
                    meta={"fold": fold, **row.meta},
                )
            )
    schema = LabelSchema(
        (
            Task("Age_group", TaskKind.ORDINAL, classes=ADIENCE_AGE_CLASSES, description="Adience age bin"),
            Task("Male", TaskKind.BINARY, description="gender m (u/empty -> unlabelled)"),
        )
    )
    return FaceDataset("adience", records, schema, skipped, transform, root)
