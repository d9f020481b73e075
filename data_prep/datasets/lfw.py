"""LFW / LFW-a / LFWA: one folder per person, gender lists and attribute files.

Images: `<images>/<Person_Name>/<Person_Name>_NNNN.jpg`, where `<images>` is the first of
`lfw-a/`, `lfw2/` (the LFW-a tarball's folder), `lfw/`, `lfw_funneled/`, `lfw-deepfunneled/`
found in `root`, or `root` itself, or an explicit `images_dir` (relative to `root`). LFW-a is
grayscale; the loader leaves that to `load_rgb`. identity = the folder (person) name. Hidden and
non-image files are ignored.

Labels, each optional:

(a) Gender, task `Male` (binary): `male_names.txt` / `female_names.txt`, the manually verified
lists of Afifi & Abdelhamed (2017): one image file name per line (`Aaron_Eckhart_0001.jpg`),
CRLF. An image in both lists (4 in this release) is ambiguous: it is dropped with a
`SkippedSample` rather than given either label. An image in neither keeps no `Male` label.
These lists are the gender ground truth; no attribute file may override them.

(b) Columbia attributes (Kumar et al. 2009), `lfw_attributes.txt`: line 1 a comment, line 2 a
tab-separated header led by `#` (`#  person  imagenum  Male  Asian ...`), then tab-separated
rows `person name with spaces, image number, 73 real-valued classifier scores` (positive =
present). They are classifier outputs, not human labels. Scores are thresholded at 0 (a score
of exactly 0 counts as absent). The attributes with a CelebA counterpart are exposed under the
CelebA name, only when the Columbia column exists in the file's header:

| CelebA task         | Columbia column(s)                                         |
|---------------------|------------------------------------------------------------|
| 5_o_Clock_Shadow    | 5 o' Clock Shadow                                          |
| Arched_Eyebrows     | Arched Eyebrows                                            |
| Attractive          | Attractive Woman if female, else Attractive Man (*)        |
| Bags_Under_Eyes     | Bags Under Eyes                                            |
| Bald                | Bald                                                       |
| Bangs               | Bangs                                                      |
| Big_Lips            | Big Lips                                                   |
| Big_Nose            | Big Nose                                                   |
| Black_Hair          | Black Hair                                                 |
| Blond_Hair          | Blond Hair                                                 |
| Blurry              | Blurry                                                     |
| Brown_Hair          | Brown Hair                                                 |
| Bushy_Eyebrows      | Bushy Eyebrows                                             |
| Chubby              | Chubby                                                     |
| Double_Chin         | Double Chin                                                |
| Eyeglasses          | Eyeglasses                                                 |
| Goatee              | Goatee                                                     |
| Gray_Hair           | Gray Hair                                                  |
| Heavy_Makeup        | Heavy Makeup                                               |
| High_Cheekbones     | High Cheekbones                                            |
| Male_columbia       | Male (kept apart: the verified lists are `Male`)           |
| Mouth_Slightly_Open | Mouth Slightly Open                                        |
| Mustache            | Mustache                                                   |
| Narrow_Eyes         | Narrow Eyes                                                |
| No_Beard            | No Beard                                                   |
| Oval_Face           | Oval Face                                                  |
| Pale_Skin           | Pale Skin                                                  |
| Pointy_Nose         | Pointy Nose                                                |
| Receding_Hairline   | Receding Hairline                                          |
| Rosy_Cheeks         | Rosy Cheeks                                                |
| Sideburns           | Sideburns                                                  |
| Smiling             | Smiling                                                    |
| Straight_Hair       | Straight Hair                                              |
| Wavy_Hair           | Wavy Hair                                                  |
| Wearing_Earrings    | Wearing Earrings                                           |
| Wearing_Hat         | Wearing Hat                                                |
| Wearing_Lipstick    | Wearing Lipstick                                           |
| Wearing_Necklace    | Wearing Necklace                                           |
| Wearing_Necktie     | Wearing Necktie                                            |
| Young               | max(Baby, Child, Youth) > max(Middle Aged, Senior)         |

(*) the gender is taken from the verified lists; for an image in neither list, from the sign
of Columbia's Male score.

`Young`: Columbia scores five age classes where CelebA has one yes/no; an image is Young when
its best young class (Baby, Child, Youth) outscores its best older class (Middle Aged,
Senior). CelebA's annotators called about 3/4 of its faces young, which matches "not middle
aged or senior" better than thresholding Youth alone. Columbia attributes without a CelebA
counterpart (Asian, White, Black, Indian, Curly Hair, Sunglasses, lighting, forehead, ...)
stay available as raw scores in `meta["columbia_scores"]` (column name -> float). Hair colour
on grayscale LFW-a images is ill-posed; the labels are exposed anyway, for completeness.

(c) LFWA (Liu et al.): the 40 CelebA attributes for LFW, distributed as `lfw_att_40.mat`.
No text copy is published; users convert it to CelebA's `list_attr` text format (count line,
header of 40 names, rows `file v1 .. v40` in -1/1 or 0/1). The file column may be
`Person_Name_0001.jpg`, `Person_Name/Person_Name_0001.jpg` or the Windows-style
`Person_Name\\Person_Name_0001.jpg` of the .mat; only the base name is used. Looked for as
`lfw_att_40.txt`, `list_attr_lfwa.txt`, `list_attr_lfw.txt` or `lfwa_attributes.txt`, or
given as `lfwa_file`. Its `Male` becomes `Male_lfwa` for the same reason as above; the other
39 keep their names.

`attributes` selects (b)/(c): "auto" (LFWA if its file is found, else Columbia if found),
"lfwa", "columbia" or "none". Rows of (a), (b) or (c) naming an image that is not on disk are
reported as `SkippedSample`s; malformed rows raise `LabelFileError` with file and line.

Split: LFW defines no attribute split, so records get a seeded identity-disjoint split
(`split_seed`, `split_fractions`; see `splits.py`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Sequence

from data_prep.datasets.base import FaceDataset, require_dir
from data_prep.datasets.celeba import CELEBA_ATTRIBUTES
from data_prep.datasets.record import DatasetNotFoundError, LabelFileError, SampleRecord, SkippedSample
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from data_prep.datasets.splits import DEFAULT_FRACTIONS, identity_disjoint_split
from data_prep.datasets.textio import DatasetOptionError, check_split_argument, read_label_lines, read_whitespace_table
from data_prep.images import IMAGE_SUFFIXES

__all__ = [
    "COLUMBIA_TO_CELEBA",
    "LFWA_FILE_NAMES",
    "load_lfw",
    "read_gender_lists",
    "read_columbia_attributes",
    "lfw_file_name",
]

log = logging.getLogger(__name__)

_IMAGE_DIR_NAMES = ("lfw-a", "lfw2", "lfw", "lfw_funneled", "lfw-deepfunneled")
LFWA_FILE_NAMES = ("lfw_att_40.txt", "list_attr_lfwa.txt", "list_attr_lfw.txt", "lfwa_attributes.txt")

# CelebA task -> Columbia column, for the one-to-one matches (see the table above).
COLUMBIA_TO_CELEBA: dict[str, str] = {
    "5_o_Clock_Shadow": "5 o' Clock Shadow",
    "Arched_Eyebrows": "Arched Eyebrows",
    "Bags_Under_Eyes": "Bags Under Eyes",
    "Bald": "Bald",
    "Bangs": "Bangs",
    "Big_Lips": "Big Lips",
    "Big_Nose": "Big Nose",
    "Black_Hair": "Black Hair",
    "Blond_Hair": "Blond Hair",
    "Blurry": "Blurry",
    "Brown_Hair": "Brown Hair",
    "Bushy_Eyebrows": "Bushy Eyebrows",
    "Chubby": "Chubby",
    "Double_Chin": "Double Chin",
    "Eyeglasses": "Eyeglasses",
    "Goatee": "Goatee",
    "Gray_Hair": "Gray Hair",
    "Heavy_Makeup": "Heavy Makeup",
    "High_Cheekbones": "High Cheekbones",
    "Male_columbia": "Male",
    "Mouth_Slightly_Open": "Mouth Slightly Open",
    "Mustache": "Mustache",
    "Narrow_Eyes": "Narrow Eyes",
    "No_Beard": "No Beard",
    "Oval_Face": "Oval Face",
    "Pale_Skin": "Pale Skin",
    "Pointy_Nose": "Pointy Nose",
    "Receding_Hairline": "Receding Hairline",
    "Rosy_Cheeks": "Rosy Cheeks",
    "Sideburns": "Sideburns",
    "Smiling": "Smiling",
    "Straight_Hair": "Straight Hair",
    "Wavy_Hair": "Wavy Hair",
    "Wearing_Earrings": "Wearing Earrings",
    "Wearing_Hat": "Wearing Hat",
    "Wearing_Lipstick": "Wearing Lipstick",
    "Wearing_Necklace": "Wearing Necklace",
    "Wearing_Necktie": "Wearing Necktie",
}
_YOUNG_COLUMNS = ("Baby", "Child", "Youth")
_OLDER_COLUMNS = ("Middle Aged", "Senior")
_ATTRACTIVE_COLUMNS = ("Attractive Man", "Attractive Woman")

_LFW_NAME = re.compile(r"(?P<person>.+)_(?P<number>\d{4})\.(?:jpg|jpeg|png)", re.IGNORECASE)


def lfw_file_name(person: str, number: int) -> str:
    """`('Amelie Mauresmo', 1)` -> 'Amelie_Mauresmo_0001.jpg' (LFW's naming)."""
    return f"{person.strip().replace(' ', '_')}_{int(number):04d}.jpg"


def _person_of(file_name: str) -> str | None:
    match = _LFW_NAME.fullmatch(file_name)
    return match.group("person") if match else None


# --------------------------------------------------------------------------------------------
# label files


def read_gender_lists(
    male: Path | str, female: Path | str
) -> tuple[dict[str, int], dict[str, tuple[int, int]], dict[str, tuple[str, int]]]:
    """Parse `male_names.txt` and `female_names.txt`.

    Returns (labels {file: 1 male / 0 female}, conflicts {file: (male line, female line)} for
    images listed in both (excluded from labels), sources {file: (list file, line)}).
    """
    found: dict[str, dict[str, int]] = {}
    for value, path in ((1, Path(male)), (0, Path(female))):
        seen: dict[str, int] = {}
        for number, line in read_label_lines(path, strip=True).lines:
            name = line.replace("\\", "/").rsplit("/", 1)[-1]
            if " " in name or _person_of(name) is None:
                raise LabelFileError(
                    path, number, f"expected an LFW file name like Person_Name_0001.jpg, found {line[:60]!r}"
                )
            seen.setdefault(name, number)  # a repeat within one list is harmless
        found["male" if value else "female"] = seen
    males, females = found["male"], found["female"]
    labels: dict[str, int] = {}
    sources: dict[str, tuple[str, int]] = {}
    conflicts: dict[str, tuple[int, int]] = {}
    for name, number in males.items():
        if name in females:
            conflicts[name] = (number, females[name])
        else:
            labels[name] = 1
            sources[name] = (str(male), number)
    for name, number in females.items():
        if name not in males:
            labels[name] = 0
            sources[name] = (str(female), number)
    return labels, conflicts, sources


def read_columbia_attributes(path: Path | str) -> tuple[list[str], dict[str, list[float]], dict[str, int]]:
    """Parse Columbia's `lfw_attributes.txt`: (score column names, {file: scores}, {file: line})."""
    path = Path(path)
    content = read_label_lines(path)
    columns: list[str] | None = None
    scores: dict[str, list[float]] = {}
    lines: dict[str, int] = {}
    for number, line in content.lines:
        if columns is None:
            if not line.startswith("#"):
                raise LabelFileError(
                    path, number, "expected the '#'-led header `#<TAB>person<TAB>imagenum<TAB>...` first"
                )
            fields = [f.strip() for f in line.lstrip("#").split("\t")]
            fields = [f for f in fields if f] if fields and not fields[0] else fields
            if fields[:2] == ["person", "imagenum"]:
                columns = fields[2:]
                if not columns:
                    raise LabelFileError(path, number, "the header names no attribute columns")
            continue  # a comment line before the header
        if line.startswith("#"):
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != len(columns) + 2:
            raise LabelFileError(
                path,
                number,
                f"expected {len(columns) + 2} tab-separated fields (person, imagenum, {len(columns)} scores), "
                f"found {len(fields)}",
            )
        try:
            image_number = int(fields[1])
        except ValueError:
            raise LabelFileError(path, number, f"unparseable image number {fields[1]!r}") from None
        row: list[float] = []
        for column, token in zip(columns, fields[2:]):
            try:
                value = float(token)
            except ValueError:
                value = float("nan")
            if value != value:
                raise LabelFileError(path, number, f"unparseable score {token!r} for {column!r}")
            row.append(value)
        name = lfw_file_name(fields[0], image_number)
        if name in lines:
            raise LabelFileError(path, number, f"{name} is listed twice (first at line {lines[name]})")
        scores[name] = row
        lines[name] = number
    if columns is None:
        raise LabelFileError(path, None, "no header line `#<TAB>person<TAB>imagenum<TAB>...` found")
    return columns, scores, lines


def _columbia_tasks(columns: Sequence[str]) -> list[str]:
    """CelebA-named tasks the Columbia header supports, in CelebA order."""
    present = set(columns)
    tasks = [t for t, c in COLUMBIA_TO_CELEBA.items() if c in present]
    if all(c in present for c in _YOUNG_COLUMNS + _OLDER_COLUMNS):
        tasks.append("Young")
    if all(c in present for c in _ATTRACTIVE_COLUMNS):
        tasks.append("Attractive")
    order = {n: i for i, n in enumerate(CELEBA_ATTRIBUTES)}
    return sorted(tasks, key=lambda t: order.get(t, order["Male"] + 0.5))


def _columbia_labels(
    columns: Sequence[str], scores: Sequence[float], tasks: Sequence[str], verified_male: int | None
) -> dict[str, int]:
    by_name = dict(zip(columns, scores))
    labels: dict[str, int] = {}
    for task in tasks:
        if task == "Young":
            young = max(by_name[c] for c in _YOUNG_COLUMNS)
            older = max(by_name[c] for c in _OLDER_COLUMNS)
            labels[task] = int(young > older)
        elif task == "Attractive":
            male = verified_male if verified_male is not None else int(by_name.get("Male", 0.0) > 0)
            labels[task] = int(by_name["Attractive Man" if male else "Attractive Woman"] > 0)
        else:
            labels[task] = int(by_name[COLUMBIA_TO_CELEBA[task]] > 0)
    return labels


# --------------------------------------------------------------------------------------------
# the dataset


def _find_image_dir(root: Path) -> Path:
    for name in _IMAGE_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    return root


def _scan_people(image_dir: Path) -> dict[str, Path]:
    """{file name: path} for every image in a person folder (one listing per folder)."""
    images: dict[str, Path] = {}
    with os.scandir(image_dir) as people:
        folders = sorted(e.name for e in people if e.is_dir() and not e.name.startswith("."))
    for person in folders:
        with os.scandir(image_dir / person) as entries:
            for entry in entries:
                if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                images[entry.name] = image_dir / person / entry.name
    return images


def _basename(token: str) -> str:
    return token.replace("\\", "/").rsplit("/", 1)[-1]


def load_lfw(
    root: Path | str,
    split: str | None = None,
    *,
    images_dir: Path | str | None = None,
    attributes: str = "auto",
    lfwa_file: Path | str | None = None,
    split_seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_FRACTIONS,
    transform: Callable | None = None,
) -> FaceDataset:
    """Read LFW / LFW-a with the gender lists and Columbia or LFWA attributes (module docstring)."""
    root = Path(root)
    split = check_split_argument(split)
    if attributes not in ("auto", "lfwa", "columbia", "none"):
        raise DatasetOptionError(f"attributes must be 'auto', 'lfwa', 'columbia' or 'none', not {attributes!r}")
    require_dir(root, "LFW root folder")
    image_dir = require_dir(root / images_dir, "LFW images folder") if images_dir is not None else _find_image_dir(root)
    images = _scan_people(image_dir)
    if not images:
        raise DatasetNotFoundError(f"no LFW person folders with images found in {image_dir}")

    skipped: list[SkippedSample] = []
    labels: dict[str, dict[str, int]] = {name: {} for name in images}
    meta: dict[str, dict] = {}
    excluded: set[str] = set()
    tasks: list[Task] = []

    gender: dict[str, int] = {}
    male_path, female_path = root / "male_names.txt", root / "female_names.txt"
    if male_path.is_file() and female_path.is_file():
        gender, conflicts, sources = read_gender_lists(male_path, female_path)
        for name, (male_line, female_line) in sorted(conflicts.items()):
            excluded.add(name)
            skipped.append(
                SkippedSample(
                    str(male_path),
                    male_line,
                    f"{name} is in both male_names.txt and female_names.txt (line {female_line}): ambiguous gender",
                )
            )
        for name, value in gender.items():
            if name in labels:
                labels[name]["Male"] = value
            else:
                source, line = sources[name]
                skipped.append(SkippedSample(source, line, f"image {name} not found in {image_dir}"))
        tasks.append(Task("Male", TaskKind.BINARY, description="verified gender (Afifi & Abdelhamed lists)"))
    elif male_path.is_file() or female_path.is_file():
        raise DatasetNotFoundError(f"only one of male_names.txt / female_names.txt found in {root}; both are needed")

    lfwa_path = (
        root / lfwa_file
        if lfwa_file is not None
        else next((root / n for n in LFWA_FILE_NAMES if (root / n).is_file()), None)
    )
    columbia_path = root / "lfw_attributes.txt"
    source = attributes
    if attributes == "auto":
        source = "lfwa" if lfwa_path is not None else "columbia" if columbia_path.is_file() else "none"
    if source == "lfwa":
        if lfwa_path is None or not lfwa_path.is_file():
            raise DatasetNotFoundError(
                f"LFWA attribute file not found: looked for {lfwa_path or ', '.join(LFWA_FILE_NAMES)} in {root}"
            )
        table = read_whitespace_table(lfwa_path, binary=True, what="attribute value (expected -1 or 1)", key=_basename)
        names = ["Male_lfwa" if n == "Male" else n for n in table.names]
        for name, values in table.values.items():
            if name not in labels:
                skipped.append(
                    SkippedSample(str(lfwa_path), table.lines[name], f"image {name} not found in {image_dir}")
                )
                continue
            labels[name].update(zip(names, values))
        tasks.extend(Task(n, TaskKind.BINARY, description="LFWA attribute (Liu et al.)") for n in names)
    elif source == "columbia":
        if not columbia_path.is_file():
            raise DatasetNotFoundError(f"Columbia attribute file not found: looked for {columbia_path}")
        columns, scores, lines = read_columbia_attributes(columbia_path)
        names = _columbia_tasks(columns)
        for name, row in scores.items():
            if name not in labels:
                skipped.append(SkippedSample(str(columbia_path), lines[name], f"image {name} not found in {image_dir}"))
                continue
            labels[name].update(_columbia_labels(columns, row, names, gender.get(name)))
            meta[name] = {"columbia_scores": dict(zip(columns, row))}
        tasks.extend(
            Task(
                n,
                TaskKind.BINARY,
                description="Columbia classifier score > 0 (Kumar et al.), mapped to the CelebA name",
            )
            for n in names
        )

    records = [
        SampleRecord(path=path, labels=labels[name], identity=path.parent.name, meta=meta.get(name, {}))
        for name, path in sorted(images.items(), key=lambda item: str(item[1]))
        if name not in excluded
    ]
    records = identity_disjoint_split(records, split_fractions, seed=split_seed)
    if split is not None:
        records = [r for r in records if r.split == split]
    return FaceDataset("lfw", records, LabelSchema(tuple(tasks)), skipped, transform, root)
