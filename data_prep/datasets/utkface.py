"""UTKFace (Zhang, Song & Qi, CVPR 2017): age, gender and race in the file name.

Images: `crop_part1/` (the 9,780-image "part 1" of the cropped faces), `UTKFace/` (all 23,708
aligned & cropped faces) or the in-the-wild `part1/`..`part3/`; the first of `UTKFace/`,
`crop_part1/` found in `root`, else `root` itself, or an explicit `folder` (relative to `root`).

File names: `[age]_[gender]_[race]_[date&time].jpg.chip.jpg` for the crops
(`[..].jpg` for the in-the-wild images): age 0..116; gender 0 male, 1 female; race
0 White, 1 Black, 2 Asian, 3 Indian, 4 Others; date&time `yyyymmddHHMMSSFFF`. Tasks:
- `Age`: regression in [0, 116];
- `Male`: binary, 1 when gender is 0;
- `Race`: categorical, classes ("White", "Black", "Asian", "Indian", "Others").
A name that does not follow the pattern (the shared copy has two: one without the race field,
one with gender 3) or has an out-of-range value becomes a `SkippedSample` with the reason;
it is never guessed. Hidden files and non-image files are ignored.

No identities are published (identity None). `duplicate_groups.csv` (header
`group,image,age`; written for the shared copy, not part of UTKFace) lists byte-identical
images; they often carry different ages. When the file is present, `meta["duplicate_group"]`
holds the group number; rows naming images not in the folder are ignored (the file may
describe a larger copy). Use `deduplicate` before evaluating age, and the reader's derived
split keeps each group inside one split (`group_key="duplicate_group"`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

from data_prep.datasets.base import FaceDataset, require_dir
from data_prep.datasets.record import DatasetNotFoundError, LabelFileError, SampleRecord, SkippedSample
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from data_prep.datasets.splits import DEFAULT_FRACTIONS, identity_disjoint_split
from data_prep.datasets.textio import check_split_argument, list_file_names, read_label_lines
from data_prep.images import IMAGE_SUFFIXES

__all__ = ["UTK_RACES", "UTK_MAX_AGE", "load_utkface", "parse_utkface_name", "read_duplicate_groups", "deduplicate"]

UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")
UTK_MAX_AGE = 116
_FOLDERS = ("UTKFace", "crop_part1")
_NAME = re.compile(r"(?P<fields>[^.]*)\.jpg(?:\.chip\.jpg)?", re.IGNORECASE)


def parse_utkface_name(name: str) -> tuple[int, int, int, str]:
    """(age, gender, race, datetime) from a UTKFace file name; ValueError saying why not."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError("not a UTKFace file name (expected age_gender_race_datetime.jpg.chip.jpg)")
    fields = match.group("fields").split("_")
    if len(fields) != 4:
        reason = f"{len(fields)} underscore-separated fields, expected 4 (age_gender_race_datetime)"
        if len(fields) > 1 and fields[1] not in ("0", "1"):
            reason += f"; gender {fields[1]!r} is neither 0 (male) nor 1 (female)"
        raise ValueError(reason)
    if not all(f.isascii() and f.isdigit() for f in fields):
        raise ValueError("non-numeric field in age_gender_race_datetime")
    age, gender, race = int(fields[0]), int(fields[1]), int(fields[2])
    if not 0 <= age <= UTK_MAX_AGE:
        raise ValueError(f"age {age} outside 0..{UTK_MAX_AGE}")
    if gender not in (0, 1):
        raise ValueError(f"gender {gender} is neither 0 (male) nor 1 (female)")
    if not 0 <= race < len(UTK_RACES):
        raise ValueError(f"race {race} outside 0..{len(UTK_RACES) - 1}")
    return age, gender, race, fields[3]


def read_duplicate_groups(path: Path | str) -> dict[str, int]:
    """`duplicate_groups.csv` (`group,image,age`) -> {image file name: group number}."""
    path = Path(path)
    content = read_label_lines(path, strip=True)
    if not content.lines:
        return {}
    header_number, header = content.lines[0]
    columns = [c.strip().lower() for c in header.split(",")]
    if "group" not in columns or "image" not in columns:
        raise LabelFileError(
            path, header_number, f"expected a header with 'group' and 'image' columns, found {header!r}"
        )
    group_at, image_at = columns.index("group"), columns.index("image")
    groups: dict[str, int] = {}
    for number, line in content.lines[1:]:
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(columns):
            raise LabelFileError(path, number, f"expected {len(columns)} comma-separated fields, found {len(fields)}")
        try:
            group = int(fields[group_at])
        except ValueError:
            raise LabelFileError(path, number, f"unparseable group number {fields[group_at]!r}") from None
        if fields[image_at] in groups and groups[fields[image_at]] != group:
            raise LabelFileError(
                path, number, f"{fields[image_at]} is in two groups ({groups[fields[image_at]]} and {group})"
            )
        groups[fields[image_at]] = group
    return groups


def deduplicate(
    records: Iterable[SampleRecord], key: str = "duplicate_group", *, drop_conflicting: bool = False
) -> list[SampleRecord]:
    """Keep one record per `meta[key]` group (the first by path); records outside any group
    stay. `drop_conflicting=True` drops whole groups whose copies disagree on a label (UTKFace
    duplicates often carry different ages, so no copy can be trusted)."""
    records = list(records)
    by_group: dict[object, list[SampleRecord]] = {}
    for record in records:
        group = record.meta.get(key)
        if group is not None:
            by_group.setdefault(group, []).append(record)
    keep: set[int] = set()
    for members in by_group.values():
        members = sorted(members, key=lambda r: str(r.path))
        if drop_conflicting and any(m.labels != members[0].labels for m in members[1:]):
            continue
        keep.add(id(members[0]))
    return [r for r in records if r.meta.get(key) is None or id(r) in keep]


def _find_folder(root: Path) -> Path:
    for name in _FOLDERS:
        if (root / name).is_dir():
            return root / name
    return root


def load_utkface(
    root: Path | str,
    split: str | None = None,
    *,
    folder: Path | str | None = None,
    split_seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_FRACTIONS,
    transform: Callable | None = None,
) -> FaceDataset:
    """Read UTKFace from `root` (see the module docstring). `folder` overrides the image folder."""
    root = Path(root)
    split = check_split_argument(split)
    require_dir(root, "UTKFace root folder")
    image_dir = require_dir(root / folder, "UTKFace image folder") if folder is not None else _find_folder(root)
    names = sorted(n for n in list_file_names(image_dir) if Path(n).suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise DatasetNotFoundError(
            f"no UTKFace images found in {image_dir} (looked for UTKFace/ and crop_part1/ in {root})"
        )
    groups_path = next(
        (p for p in (root / "duplicate_groups.csv", image_dir / "duplicate_groups.csv") if p.is_file()), None
    )
    groups = read_duplicate_groups(groups_path) if groups_path is not None else {}

    records: list[SampleRecord] = []
    skipped: list[SkippedSample] = []
    for name in names:
        try:
            age, gender, race, taken = parse_utkface_name(name)
        except ValueError as exc:
            skipped.append(SkippedSample(str(image_dir / name), None, f"malformed UTKFace file name: {exc}"))
            continue
        meta: dict = {"datetime": taken}
        if name in groups:
            meta["duplicate_group"] = groups[name]
        records.append(
            SampleRecord(
                path=image_dir / name,
                labels={"Age": float(age), "Male": int(gender == 0), "Race": race},
                identity=None,
                meta=meta,
            )
        )
    records = identity_disjoint_split(records, split_fractions, seed=split_seed, group_key="duplicate_group")
    if split is not None:
        records = [r for r in records if r.split == split]
    schema = LabelSchema(
        (
            Task(
                "Age",
                TaskKind.REGRESSION,
                value_range=(0.0, float(UTK_MAX_AGE)),
                description="age in years (file name)",
            ),
            Task("Male", TaskKind.BINARY, description="gender 0 in the file name"),
            Task("Race", TaskKind.CATEGORICAL, classes=UTK_RACES, description="race field of the file name"),
        )
    )
    return FaceDataset("utkface", records, schema, skipped, transform, root)
