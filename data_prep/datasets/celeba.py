"""CelebA (Liu et al., ICCV 2015): 40 binary attributes, identities, official split.

Layout: the files may sit in `root` itself or in the official Google-Drive folders
(`root/Anno/`, `root/Eval/`, `root/Img/`). Images: `img_align_celeba/` (178x218 aligned
crops, `images="align"`) or `img_celeba/` (in-the-wild originals, `images="wild"`); the Kaggle
archive's doubled folder `img_align_celeba/img_align_celeba/` is accepted.

Label files, in CelebA's own format (all fields separated by runs of whitespace):
- `list_attr_celeba.txt`: line 1 the row count (202599 in the official file; subset or
  truncated copies keep or rewrite it), line 2 the 40 attribute names (the official file has a
  trailing space before CRLF), then `NNNNNN.jpg v1 ... v40` with v in {-1, 1}, padded to two
  characters. -1/+1 become 0/1. A missing count line or a count that disagrees with the rows
  gives a warning, not an error. The Kaggle re-format `list_attr_celeba.csv`
  (`image_id,5_o_Clock_Shadow,...`, comma-separated, no count line) is read as well.
- `list_eval_partition.txt`: `file 0|1|2` (0 train, 1 val, 2 test); Kaggle:
  `list_eval_partition.csv` with header `image_id,partition`. Required.
- `identity_CelebA.txt`: `file identity_number`. Optional (identity None without it, with a
  warning).
- `list_landmarks_align_celeba.txt` / `list_landmarks_celeba.txt` (count line, a header of 10
  names with no image_id column, rows of 11 fields) or the Kaggle
  `list_landmarks_align_celeba.csv` (`image_id,lefteye_x,...`): optional, five (x, y) points
  in `meta["landmarks"]` as [[x, y], ...] (left eye, right eye, nose, left and right mouth
  corner). The aligned landmarks go with `images="align"`, the in-the-wild ones with
  `images="wild"`.
- `list_bbox_celeba.txt` (count line, header `image_id x_1 y_1 width height`) or the Kaggle
  `list_bbox_celeba.csv`: optional. The boxes are in in-the-wild image coordinates, so they
  are `meta["bbox"]` = [x, y, w, h] for `images="wild"` and `meta["bbox_wild"]` for aligned
  images (where they do not describe the pixels of the aligned crop).
A label file that is really a saved HTML page (a failed Google-Drive download) is refused.

Errors and skips. The attribute file defines the samples. Every other label file must have
exactly one row for each of its images: a missing row, a row for an image the attribute file
does not list, a repeated row, a wrong field count or an unparseable value raises
`LabelFileError` naming file and line. An attribute row whose image is not on disk (the
shared copy pairs 4,560 images with label files that may list all 202,599) and an image on
disk with no attribute row become `SkippedSample`s. Images are checked with one directory
listing, not one `stat` per row.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable, Sequence

from data_prep.datasets.base import FaceDataset, require_dir
from data_prep.datasets.record import DatasetNotFoundError, LabelFileError, SampleRecord, SkippedSample
from data_prep.datasets.schema import LabelSchema
from data_prep.datasets.textio import (
    PLUS_MINUS_ONE,
    DatasetOptionError,
    Table,
    check_split_argument,
    list_file_names,
    read_label_lines,
    read_whitespace_table,
)
from data_prep.images import IMAGE_SUFFIXES

__all__ = [
    "CELEBA_ATTRIBUTES",
    "load_celeba",
    "read_celeba_attributes",
    "read_celeba_partition",
    "read_celeba_identities",
    "read_celeba_landmarks",
    "read_celeba_bboxes",
]

log = logging.getLogger(__name__)

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

_PARTITIONS = {"0": "train", "1": "val", "2": "test"}
_SUBDIRS = ("", "Anno", "Eval", "Img")
_IMAGE_DIRS = {"align": "img_align_celeba", "wild": "img_celeba"}
_LANDMARK_FILES = {"align": "list_landmarks_align_celeba", "wild": "list_landmarks_celeba"}


# --------------------------------------------------------------------------------------------
# label files alone


def _read_csv_table(path: Path, convert: Callable[[str], object], what: str) -> Table:
    """The Kaggle re-format: one header row `image_id,name,...`, comma-separated, no count line."""
    content = read_label_lines(path, strip=True)
    if not content.lines:
        raise LabelFileError(path, None, "the file is empty")
    header_number, header = content.lines[0]
    names = [n.strip() for n in header.split(",")]
    if names[0].lower() not in ("image_id", "image", "filename", "file"):
        raise LabelFileError(path, header_number, f"expected a header starting with image_id, found {header[:60]!r}")
    names = names[1:]
    values: dict[str, list] = {}
    lines: dict[str, int] = {}
    for number, line in content.lines[1:]:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(names) + 1:
            raise LabelFileError(path, number, f"expected {len(names) + 1} comma-separated fields, found {len(parts)}")
        row = []
        for name, token in zip(names, parts[1:]):
            try:
                row.append(convert(token))
            except (KeyError, ValueError):
                raise LabelFileError(path, number, f"unparseable {what} {token!r} for {name!r}") from None
        if parts[0] in lines:
            raise LabelFileError(path, number, f"{parts[0]} is listed twice (first at line {lines[parts[0]]})")
        values[parts[0]] = row
        lines[parts[0]] = number
    return Table(path, names, values, lines, None)


def _read_table(path: Path | str, convert: Callable[[str], object] | None, what: str, *, binary: bool = False) -> Table:
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _read_csv_table(path, convert or PLUS_MINUS_ONE.__getitem__, what)
    return read_whitespace_table(path, convert, binary=binary, what=what)


def _read_attribute_table(path: Path | str) -> Table:
    table = _read_table(path, None, "attribute value (expected -1 or 1)", binary=True)
    unknown = [n for n in table.names if n not in CELEBA_ATTRIBUTES]
    if unknown:
        # Not an error: LFWA and custom re-labellings reuse the format with other names.
        log.info("%s: attribute names outside CelebA's 40: %s", path, unknown[:5])
    return table


def read_celeba_attributes(path: Path | str) -> tuple[list[str], dict[str, list[int]]]:
    """Parse `list_attr_celeba.txt` (or the Kaggle `.csv`) alone: (attribute names,
    {file name: [0/1 per attribute]}). The full 202,599-row file takes about a second."""
    table = _read_attribute_table(path)
    return table.names, table.values


def _read_two_column(
    path: Path, convert: Callable[[str], object], what: str
) -> tuple[dict[str, object], dict[str, int]]:
    """`file value` rows (partition, identity), or the Kaggle CSV with a header row."""
    content = read_label_lines(path, strip=True)
    csv = path.suffix.lower() == ".csv"
    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    rows = content.lines
    if csv and rows and Path(rows[0][1].split(",")[0].strip()).suffix.lower() not in IMAGE_SUFFIXES:
        rows = rows[1:]  # the header row, e.g. `image_id,partition`
    for number, line in rows:
        parts = [p.strip() for p in line.split(",")] if csv else line.split()
        if len(parts) != 2:
            raise LabelFileError(path, number, f"expected 2 fields (file name, {what}), found {len(parts)}")
        try:
            value = convert(parts[1])
        except (KeyError, ValueError):
            raise LabelFileError(path, number, f"unparseable {what} {parts[1]!r}") from None
        if parts[0] in lines:
            raise LabelFileError(path, number, f"{parts[0]} is listed twice (first at line {lines[parts[0]]})")
        values[parts[0]] = value
        lines[parts[0]] = number
    return values, lines


def read_celeba_partition(path: Path | str) -> dict[str, str]:
    """`list_eval_partition.txt` -> {file: 'train' | 'val' | 'test'}."""
    return _read_two_column(Path(path), _PARTITIONS.__getitem__, "partition (expected 0, 1 or 2)")[0]  # type: ignore[return-value]


def _identity(token: str) -> str:
    return str(int(token))


def read_celeba_identities(path: Path | str) -> dict[str, str]:
    """`identity_CelebA.txt` -> {file: identity number as a string}."""
    return _read_two_column(Path(path), _identity, "identity number")[0]  # type: ignore[return-value]


def read_celeba_landmarks(path: Path | str) -> dict[str, list[list[int]]]:
    """Landmark file (txt or Kaggle csv) -> {file: [[x, y] x 5]}."""
    table = _read_landmark_table(Path(path))
    return {name: _pairs(values) for name, values in table.values.items()}


def read_celeba_bboxes(path: Path | str) -> dict[str, list[int]]:
    """`list_bbox_celeba.txt` (or csv) -> {file: [x_1, y_1, width, height]}."""
    return dict(_read_bbox_table(Path(path)).values)


def _read_landmark_table(path: Path) -> Table:
    table = _read_table(path, int, "landmark coordinate")
    if len(table.names) != 10:
        raise LabelFileError(
            path, None, f"expected 10 landmark columns (5 points), found {len(table.names)}: {table.names}"
        )
    return table


def _read_bbox_table(path: Path) -> Table:
    table = _read_table(path, int, "box coordinate")
    if len(table.names) != 4:
        raise LabelFileError(path, None, f"expected 4 box columns (x_1 y_1 width height), found {table.names}")
    return table


def _pairs(values: Sequence[int]) -> list[list[int]]:
    return [[int(values[i]), int(values[i + 1])] for i in range(0, len(values), 2)]


# --------------------------------------------------------------------------------------------
# locating files


def _find(root: Path, stems: Sequence[str], suffixes: Sequence[str] = (".txt", ".csv")) -> Path | None:
    for sub in _SUBDIRS:
        for stem in stems:
            for suffix in suffixes:
                candidate = root / sub / f"{stem}{suffix}"
                if candidate.is_file():
                    return candidate
    return None


def _find_image_dir(root: Path, images: str) -> Path:
    name = _IMAGE_DIRS[images]
    for sub in ("", "Img"):
        folder = root / sub / name
        if folder.is_dir():
            nested = folder / name  # the Kaggle archive unpacks to img_align_celeba/img_align_celeba/
            return nested if nested.is_dir() else folder
    if (root.name == name) and root.is_dir():
        return root
    return require_dir(root / name, f"CelebA images ({images})")


def _check_covers(attr: Table, other: Table | tuple[dict, dict], other_path: Path, names: Sequence[str]) -> None:
    """Every image of the attribute file must have a row in `other`, and vice versa."""
    lines = other.lines if isinstance(other, Table) else other[1]
    for name in names:
        if name not in lines:
            raise LabelFileError(attr.path, attr.lines[name], f"{name} has no row in {other_path.name}")
    if len(lines) != len(names):
        known = set(names)
        for name, number in lines.items():
            if name not in known:
                raise LabelFileError(other_path, number, f"{name} is not in {attr.path.name} (unknown image)")


# --------------------------------------------------------------------------------------------
# the dataset


def load_celeba(
    root: Path | str,
    split: str | None = None,
    *,
    images: str = "align",
    attributes: Sequence[str] | None = None,
    transform: Callable | None = None,
) -> FaceDataset:
    """Read CelebA from `root` (see the module docstring for the files and layouts).

    `split` keeps one official partition ('train', 'val', 'test'); `images` picks the aligned
    ('align') or in-the-wild ('wild') images; `attributes` restricts the tasks to these names.
    """
    root = Path(root)
    split = check_split_argument(split)
    if images not in _IMAGE_DIRS:
        raise DatasetOptionError(f"images must be 'align' or 'wild', not {images!r}")
    require_dir(root, "CelebA root folder")
    attr_path = _find(root, ["list_attr_celeba"])
    if attr_path is None:
        raise DatasetNotFoundError(
            f"CelebA attribute file not found: looked for list_attr_celeba.txt/.csv in {root} and Anno/"
        )
    partition_path = _find(root, ["list_eval_partition"])
    if partition_path is None:
        raise DatasetNotFoundError(
            f"CelebA partition file not found: looked for list_eval_partition.txt/.csv in {root} and Eval/"
        )
    image_dir = _find_image_dir(root, images)

    attr = _read_attribute_table(attr_path)
    names = list(attr.values)
    keep = list(attr.names)
    if attributes is not None:
        missing = [a for a in attributes if a not in attr.names]
        if missing:
            raise DatasetOptionError(f"attributes not in {attr_path.name}: {missing}")
        keep = list(attributes)
    columns = [attr.names.index(a) for a in keep]

    partition = _read_two_column(partition_path, _PARTITIONS.__getitem__, "partition (expected 0, 1 or 2)")
    _check_covers(attr, partition, partition_path, names)

    identity_path = _find(root, ["identity_CelebA"])
    identities: tuple[dict, dict] | None = None
    if identity_path is not None:
        identities = _read_two_column(identity_path, _identity, "identity number")
        _check_covers(attr, identities, identity_path, names)
    else:
        warnings.warn(f"{root}: identity_CelebA.txt not found; records have no identity", stacklevel=2)

    landmarks: Table | None = None
    landmark_path = _find(root, [_LANDMARK_FILES[images]])
    if landmark_path is not None:
        landmarks = _read_landmark_table(landmark_path)
        _check_covers(attr, landmarks, landmark_path, names)
    bboxes: Table | None = None
    bbox_path = _find(root, ["list_bbox_celeba"])
    if bbox_path is not None:
        bboxes = _read_bbox_table(bbox_path)
        _check_covers(attr, bboxes, bbox_path, names)
    bbox_key = "bbox" if images == "wild" else "bbox_wild"

    on_disk = list_file_names(image_dir)
    records: list[SampleRecord] = []
    skipped: list[SkippedSample] = []
    for name in names:
        if name not in on_disk:
            skipped.append(SkippedSample(str(attr_path), attr.lines[name], f"image {name} not found in {image_dir}"))
            continue
        row_split = partition[0][name]
        if split is not None and row_split != split:
            continue
        values = attr.values[name]
        meta: dict = {}
        if landmarks is not None:
            meta["landmarks"] = _pairs(landmarks.values[name])
        if bboxes is not None:
            meta[bbox_key] = list(bboxes.values[name])
        records.append(
            SampleRecord(
                path=image_dir / name,
                labels={a: values[c] for a, c in zip(keep, columns)},
                identity=identities[0][name] if identities is not None else None,
                split=row_split,  # type: ignore[arg-type]
                meta=meta,
            )
        )
    listed = attr.values
    for name in sorted(on_disk):
        if name not in listed and Path(name).suffix.lower() in IMAGE_SUFFIXES:
            skipped.append(SkippedSample(str(image_dir / name), None, f"no row in {attr_path.name}"))
    schema = LabelSchema.binary(keep, description="CelebA attribute (human annotated)")
    dataset = FaceDataset("celeba", records, schema, skipped, transform, root)
    if skipped:
        log.info("celeba: %d label rows or files skipped (first: %s)", len(skipped), skipped[0])
    return dataset
