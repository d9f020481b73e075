"""MORPH II (academic release, Ricanek & Tesafaye 2006): age, gender, race; identity = id_num.

Two label formats are read; which one a file is in is decided by its content (a CSV header
naming `id_num` and `photo`, or else the list format):

1. The metadata CSV (`morph_2008_nonCommercial.csv`, and the protocol CSVs derived from it,
   e.g. ibug's `whole_test.csv`, `AGR/s1/s1_train.csv`): comma-separated with a header,
   columns `id_num,picture_num,dob,doa,race,gender,facial_hair,age,age_diff,glasses,photo`
   (matched by name, so order does not matter; `id_num, race, gender, age, photo` are
   required). `dob`/`doa` are MM/DD/YYYY; `race` one of B W H A O; `gender` M or F; `age` an
   integer (a float string such as `34.0` is accepted); `age_diff` a float string or empty (the
   subject's first photo); `facial_hair` and `glasses` are empty in every public copy. `photo`
   is a path such as `Album2/320711_00M34.JPG`, relative to the dataset root.
2. The AGR protocol lists `S1.txt`, `S2.txt`, `S3.txt` (Guo & Mu): no header, CRLF, rows
   `photo age race gender` separated by spaces, race 0 = B / 1 = W, gender 0 = M / 1 = F.
   identity = the id in the photo name (`092796_0M43.JPG` -> "92796", the same as the CSV's
   unpadded `id_num`).

Tasks: `Age` regression in [0, 100]; `Male` binary (gender M); `Race` categorical with classes
("Black", "White", "Hispanic", "Asian", "Other") for B, W, H, A, O (the list format's 0/1 map
onto the same first two classes). `meta` holds `picture_num`, `dob`, `doa` (ISO dates) and
`age_diff` (days since the subject's previous photo; None when empty) where present.

Photo names: the picture number is padded inconsistently (`009055_0M54.JPG` and
`320711_00M34.JPG` both occur) and the extension is `.JPG`. A photo is looked up by its exact
path first, then by its normalised name (id, picture number, gender, age; any padding, any
extension case) in the same folder, relative to the root and then to the label file; each
folder is listed once. A row whose photo is still not found becomes a `SkippedSample`; a
malformed row (wrong field count, unknown race or gender code, unparseable age or date, empty
required field) raises `LabelFileError` with file and line.

Splits: `split_files={"train": ..., "test": ...}` reads one label file per split (the
protocol's official split). With a single label file (`labels`, default: the first of
`morph_2008_nonCommercial.csv`, `MORPH_Album2_Commercial.csv`, or the only `*.csv`, in
`root`), records get a seeded identity-disjoint split (see `splits.py`).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, Sequence

from data_prep.datasets.base import FaceDataset, require_dir, require_file
from data_prep.datasets.record import SPLITS, DatasetNotFoundError, LabelFileError, SampleRecord, SkippedSample
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from data_prep.datasets.splits import DEFAULT_FRACTIONS, identity_disjoint_split
from data_prep.datasets.textio import DatasetOptionError, check_split_argument, list_file_names, read_label_lines

__all__ = ["MORPH_RACES", "MORPH_LABEL_FILES", "load_morph", "read_morph_labels", "MorphRow"]

MORPH_RACES = ("Black", "White", "Hispanic", "Asian", "Other")
MORPH_LABEL_FILES = ("morph_2008_nonCommercial.csv", "MORPH_Album2_Commercial.csv")
_RACE_CODES = {"B": 0, "W": 1, "H": 2, "A": 3, "O": 4}
_LIST_RACES = {"0": 0, "1": 1}  # AGR lists: 0 = B, 1 = W (checked against s1_train.csv)
_LIST_GENDERS = {"0": 1, "1": 0}  # 0 = M -> Male 1
_REQUIRED = ("id_num", "race", "gender", "age", "photo")
_PHOTO = re.compile(r"(?P<id>\d+)_(?P<pic>\d+)(?P<gender>[MF])(?P<age>\d+)\.jpe?g", re.IGNORECASE)
_MAX_AGE = 100.0


@dataclass(frozen=True)
class MorphRow:
    """One label row: its 1-based line, the photo path as written, identity, labels and meta."""

    line: int
    photo: str
    identity: str
    labels: dict
    meta: dict


def _age(token: str, path: Path, line: int) -> float:
    try:
        age = float(token)
    except ValueError:
        raise LabelFileError(path, line, f"unparseable age {token!r}") from None
    if not 0 <= age <= _MAX_AGE:
        raise LabelFileError(path, line, f"age {age} outside 0..{_MAX_AGE:.0f}")
    return age


def _date(token: str, path: Path, line: int, column: str) -> str | None:
    if not token:
        return None
    try:
        return datetime.strptime(token, "%m/%d/%Y").date().isoformat()
    except ValueError:
        raise LabelFileError(path, line, f"unparseable {column} {token!r} (expected MM/DD/YYYY)") from None


def _identity_from_photo(photo: str, path: Path, line: int) -> str:
    match = _PHOTO.fullmatch(photo.replace("\\", "/").rsplit("/", 1)[-1])
    if match is None:
        raise LabelFileError(path, line, f"photo name {photo!r} is not of the form NNNNNN_<pic><M|F><age>.JPG")
    return str(int(match.group("id")))


def _read_csv(path: Path, text_lines: list[tuple[int, str]]) -> list[MorphRow]:
    header_line, header = text_lines[0]
    columns = [c.strip() for c in next(csv.reader([header]))]
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise LabelFileError(path, header_line, f"MORPH CSV header lacks the column(s) {missing}; found {columns}")
    index = {c: i for i, c in enumerate(columns)}
    rows: list[MorphRow] = []
    for number, line in text_lines[1:]:
        fields = next(csv.reader(io.StringIO(line)))
        if len(fields) != len(columns):
            raise LabelFileError(path, number, f"expected {len(columns)} comma-separated fields, found {len(fields)}")
        cells = {name: fields[at].strip() for name, at in index.items()}
        for name in _REQUIRED:
            if not cells[name]:
                raise LabelFileError(path, number, f"empty {name}")
        try:
            identity = str(int(cells["id_num"]))
        except ValueError:
            raise LabelFileError(path, number, f"unparseable id_num {cells['id_num']!r}") from None
        race = _RACE_CODES.get(cells["race"].upper())
        if race is None:
            raise LabelFileError(
                path, number, f"unknown race {cells['race']!r} (expected one of {sorted(_RACE_CODES)})"
            )
        gender = cells["gender"].upper()
        if gender not in ("M", "F"):
            raise LabelFileError(path, number, f"unknown gender {cells['gender']!r} (expected M or F)")
        meta: dict = {}
        if cells.get("picture_num"):
            meta["picture_num"] = cells["picture_num"]
        for column in ("dob", "doa"):
            if column in index:
                meta[column] = _date(cells[column], path, number, column)
        if "age_diff" in index:
            token = cells["age_diff"]
            try:
                meta["age_diff"] = float(token) if token else None
            except ValueError:
                raise LabelFileError(path, number, f"unparseable age_diff {token!r}") from None
        labels = {"Age": _age(cells["age"], path, number), "Male": int(gender == "M"), "Race": race}
        rows.append(MorphRow(number, cells["photo"], identity, labels, meta))
    return rows


def _read_list(path: Path, text_lines: list[tuple[int, str]]) -> list[MorphRow]:
    rows: list[MorphRow] = []
    for number, line in text_lines:
        fields = line.split()
        if len(fields) != 4:
            raise LabelFileError(
                path, number, f"expected 4 space-separated fields (photo age race gender), found {len(fields)}"
            )
        photo, age, race, gender = fields
        if race not in _LIST_RACES:
            raise LabelFileError(path, number, f"unknown race code {race!r} (expected 0 = B or 1 = W)")
        if gender not in _LIST_GENDERS:
            raise LabelFileError(path, number, f"unknown gender code {gender!r} (expected 0 = M or 1 = F)")
        labels = {"Age": _age(age, path, number), "Male": _LIST_GENDERS[gender], "Race": _LIST_RACES[race]}
        rows.append(MorphRow(number, photo, _identity_from_photo(photo, path, number), labels, {}))
    return rows


def read_morph_labels(path: Path | str) -> list[MorphRow]:
    """Parse a MORPH metadata CSV or an AGR list (detected from the first line)."""
    path = Path(path)
    content = read_label_lines(path, strip=True)
    if not content.lines:
        raise LabelFileError(path, None, "the file is empty")
    first = content.lines[0][1]
    if "," in first and "photo" in first and "id_num" in first:
        return _read_csv(path, content.lines)
    if "," in first:
        raise LabelFileError(
            path, content.lines[0][0], f"a CSV without the MORPH header (id_num,...,photo): {first[:80]!r}"
        )
    return _read_list(path, content.lines)


def _normalized(name: str) -> tuple | None:
    match = _PHOTO.fullmatch(name)
    if match is None:
        return None
    return (int(match.group("id")), int(match.group("pic")), match.group("gender").upper(), int(match.group("age")))


class _PhotoIndex:
    """Resolves photo paths with one listing per folder (exact name, then normalised name)."""

    def __init__(self) -> None:
        self._folders: dict[Path, tuple[set[str], dict[tuple, str]]] = {}

    def _listing(self, folder: Path) -> tuple[set[str], dict[tuple, str]]:
        if folder not in self._folders:
            names = list_file_names(folder) if folder.is_dir() else set()
            normalized = {}
            for name in names:
                key = _normalized(name)
                if key is not None:
                    normalized.setdefault(key, name)
            self._folders[folder] = (names, normalized)
        return self._folders[folder]

    def resolve(self, photo: str, bases: Sequence[Path]) -> Path | None:
        relative = Path(photo.replace("\\", "/"))
        for base in bases:
            folder = base / relative.parent
            names, normalized = self._listing(folder)
            if relative.name in names:
                return folder / relative.name
            key = _normalized(relative.name)
            if key is not None and key in normalized:
                return folder / normalized[key]
        return None


def _default_label_file(root: Path) -> Path:
    for name in MORPH_LABEL_FILES:
        if (root / name).is_file():
            return root / name
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) == 1:
        return csvs[0]
    raise DatasetNotFoundError(
        f"MORPH label file not found in {root}: looked for {', '.join(MORPH_LABEL_FILES)} or a single *.csv "
        f"(found {len(csvs)}); pass labels= or split_files="
    )


def load_morph(
    root: Path | str,
    split: str | None = None,
    *,
    labels: Path | str | None = None,
    split_files: Mapping[str, Path | str] | None = None,
    split_seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_FRACTIONS,
    transform: Callable | None = None,
) -> FaceDataset:
    """Read MORPH II (see the module docstring). Relative label paths are taken from `root`."""
    root = Path(root)
    split = check_split_argument(split)
    require_dir(root, "MORPH root folder")
    if labels is not None and split_files is not None:
        raise DatasetOptionError("give either labels= (one file) or split_files= (one file per split), not both")
    sources: list[tuple[str | None, Path]] = []
    if split_files is not None:
        for name, file in split_files.items():
            if name not in SPLITS:
                raise DatasetOptionError(f"split_files keys must be in {SPLITS}, not {name!r}")
            sources.append((name, require_file(root / file, f"MORPH {name} label file")))
    else:
        sources.append(
            (None, require_file(root / labels, "MORPH label file") if labels is not None else _default_label_file(root))
        )

    index = _PhotoIndex()
    records: list[SampleRecord] = []
    skipped: list[SkippedSample] = []
    for split_name, path in sources:
        for row in read_morph_labels(path):
            image = index.resolve(row.photo, [root, path.parent])
            if image is None:
                skipped.append(SkippedSample(str(path), row.line, f"photo {row.photo} not found under {root}"))
                continue
            records.append(SampleRecord(image, row.labels, row.identity, split_name, row.meta))
    if split_files is None:
        records = identity_disjoint_split(records, split_fractions, seed=split_seed)
    if split is not None:
        records = [r for r in records if r.split == split]
    schema = LabelSchema(
        (
            Task("Age", TaskKind.REGRESSION, value_range=(0.0, _MAX_AGE), description="age at capture (years)"),
            Task("Male", TaskKind.BINARY, description="gender M"),
            Task("Race", TaskKind.CATEGORICAL, classes=MORPH_RACES, description="race code B/W/H/A/O"),
        )
    )
    return FaceDataset("morph", records, schema, skipped, transform, root)
