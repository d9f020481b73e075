"""Plumbing shared by the label-file readers.

Real copies of face-dataset label files differ in byte conventions that must not change their
meaning: CRLF or LF line endings, a UTF-8 byte-order mark, a last line without a newline,
trailing spaces, blank lines at the end. `read_label_lines` absorbs those and keeps the 1-based
line number of every line so that each error can name `file:line`. `list_file_names` lists an
image folder once (one `scandir`, no per-file `stat`), which is what makes checking 200k label
rows against the images on disk fast. `read_whitespace_table` parses the CelebA-style table
(optional count line, header of column names, rows of `file v1 v2 ...`) that CelebA's
attribute, landmark and box files and the LFWA text conversion share.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from data_prep.datasets.base import sniff_html
from data_prep.datasets.record import SPLITS, LabelFileError
from engine.errors import FaceganError

__all__ = [
    "DatasetOptionError",
    "LabelLines",
    "read_label_lines",
    "list_file_names",
    "sniff_delimiter",
    "split_fields",
    "normalize_split",
    "check_split_argument",
    "Table",
    "read_whitespace_table",
    "PLUS_MINUS_ONE",
]

# CelebA writes binary attributes as -1/+1; converted copies often use 0/1. "0" is accepted as
# negative because no CelebA-format file uses it for anything else.
PLUS_MINUS_ONE = {"1": 1, "-1": 0, "0": 0, "+1": 1, "-0": 0, "+0": 0}
_BINARY_TABLE = bytes.maketrans(b"01", b"\x00\x01")

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


class DatasetOptionError(FaceganError, ValueError):
    """A reader argument that cannot be used (an unknown split name, a fold out of range)."""


@dataclass(frozen=True)
class LabelLines:
    """The non-blank lines of a label file as (1-based line number, text without line ending)."""

    path: Path
    lines: list[tuple[int, str]] = field(default_factory=list)
    ends_with_newline: bool = True

    def __len__(self) -> int:
        return len(self.lines)


def read_label_lines(path: Path | str, *, strip: bool = False) -> LabelLines:
    """Read a text label file, refusing saved HTML pages and undecodable bytes.

    Line endings (CRLF/LF/CR) and a UTF-8 BOM are removed; blank lines are dropped but the line
    numbers of the others stay those of the file. `strip=True` also strips surrounding
    whitespace (most formats; tab-separated formats with meaningful empty last fields keep it).
    """
    path = Path(path)
    sniff_html(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LabelFileError(
            path, line, f"not UTF-8 text (byte {data[exc.start]:#04x}); is this a label file?"
        ) from None
    ends_with_newline = text.endswith(("\n", "\r"))
    raw = text.splitlines()
    lines: list[tuple[int, str]] = []
    for number, line in enumerate(raw, start=1):
        if strip:
            line = line.strip()
        if line.strip():
            lines.append((number, line))
    return LabelLines(path, lines, ends_with_newline)


def list_file_names(folder: Path) -> set[str]:
    """Names of the regular files directly in `folder` (hidden files excluded), in one listing."""
    names: set[str] = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_file():
                names.add(entry.name)
    return names


def sniff_delimiter(line: str, candidates: Sequence[str] = (",", ";", "\t")) -> str | None:
    """The first of `candidates` present in `line` (a header or first row), else None, meaning
    fields are separated by runs of whitespace."""
    for candidate in candidates:
        if candidate in line:
            return candidate
    return None


def split_fields(line: str, delimiter: str | None) -> list[str]:
    """Fields of one line, stripped; `delimiter=None` splits on runs of whitespace."""
    if delimiter is None:
        return line.split()
    return [part.strip() for part in line.split(delimiter)]


def normalize_split(value: str, path: Path, line: int) -> str:
    """Map a split name written in a label file ('train', 'valid', 'Validation', ...) to SPLITS."""
    key = value.strip().lower()
    if key not in _SPLIT_ALIASES:
        raise LabelFileError(path, line, f"unknown split {value!r}; expected one of {sorted(_SPLIT_ALIASES)}")
    return _SPLIT_ALIASES[key]


def check_split_argument(split: str | None) -> str | None:
    """Validate a reader's `split=` argument ('valid'/'validation' mean 'val'; None/'all' = every split)."""
    if split is None or split == "all":
        return None
    key = _SPLIT_ALIASES.get(str(split).lower())
    if key is None:
        raise DatasetOptionError(f"split must be one of {SPLITS}, 'all' or None, not {split!r}")
    return key


@dataclass
class Table:
    """A parsed CelebA-style table: column `names`, `values[file]`, and `lines[file]` (1-based)."""

    path: Path
    names: list[str]
    values: dict[str, list]
    lines: dict[str, int]
    declared_count: int | None


def _is_int(token: str) -> bool:
    digits = token.lstrip("+-")
    return digits.isascii() and digits.isdigit()  # "²".isdigit() is True, int("²") fails


def read_whitespace_table(
    path: Path | str,
    convert: Callable[[str], object] | None = None,
    *,
    binary: bool = False,
    expected_names: int | None = None,
    what: str = "value",
    key: Callable[[str], str] | None = None,
) -> Table:
    """Parse `[count line] / header of N names / rows of 'file v1 .. vN'` (CelebA's own format).

    Fields are separated by runs of whitespace (CelebA pads values to two characters). A header
    that starts with `image_id` (the box file; converted copies) has that column dropped. A
    missing count line is tolerated with a warning, as is a count that disagrees with the number
    of rows (truncated or subset copies rewrite or keep it). Any row with the wrong number of
    fields, a value that cannot be converted, or a repeated file name raises `LabelFileError`
    naming the file and line. Values go through `convert`; `binary=True` instead reads -1/+1
    (or 0/1) values as ints 0/1 on a fast path (the 202,599-row CelebA attribute file has 8M
    values; tokenising them one by one in Python costs seconds). `key` maps the file field to
    the dictionary key (e.g. to a base name).
    """
    path = Path(path)
    if binary:
        convert = PLUS_MINUS_ONE.__getitem__
    if convert is None:
        raise TypeError("read_whitespace_table needs `convert` unless binary=True")
    content = read_label_lines(path)
    lines = content.lines
    if not lines:
        raise LabelFileError(path, None, "the file is empty")
    position = 0
    declared: int | None = None
    first_number, first = lines[0]
    first_fields = first.split()
    if len(first_fields) == 1 and _is_int(first_fields[0]):
        declared = int(first_fields[0])
        position = 1
    else:
        warnings.warn(f"{path}: no count line before the header; reading on without it", stacklevel=3)
    if position >= len(lines):
        raise LabelFileError(path, first_number + 1, "expected a header line of column names")
    header_number, header = lines[position]
    names = header.split()
    if names and names[0].lower() in ("image_id", "image", "filename", "file", "path"):
        names = names[1:]
    if not names or _looks_like_image_name(names[0]):
        raise LabelFileError(path, header_number, f"expected a header of column names, found {header[:60]!r}")
    if expected_names is not None and len(names) != expected_names:
        raise LabelFileError(
            path, header_number, f"expected {expected_names} column names in the header, found {len(names)}"
        )
    width = len(names) + 1
    fast = re.compile(r"(\S+)((?:[ \t]+[-+]?[01]){%d})[ \t]*" % len(names)) if binary else None
    values: dict[str, list] = {}
    numbers: dict[str, int] = {}
    for number, line in lines[position + 1 :]:
        match = fast.fullmatch(line) if fast is not None else None
        if match is not None:
            name = match.group(1)
            # "-1" -> "0", then drop separators and signs; translate turns b"0"/b"1" into 0/1.
            row = list(match.group(2).replace("-1", "0").encode().translate(_BINARY_TABLE, b" \t+-"))
        else:
            parts = line.split()
            if len(parts) != width:
                raise LabelFileError(
                    path, number, f"expected {width} fields (file name + {len(names)} {what}s), found {len(parts)}"
                )
            row = []
            for column, token in zip(names, parts[1:]):
                try:
                    row.append(convert(token))
                except (KeyError, ValueError):
                    raise LabelFileError(path, number, f"unparseable {what} {token!r} for {column!r}") from None
            name = parts[0]
        if key is not None:
            name = key(name)
        if name in numbers:
            raise LabelFileError(path, number, f"{name} is listed twice (first at line {numbers[name]})")
        values[name] = row
        numbers[name] = number
    if declared is not None and declared != len(values):
        warnings.warn(
            f"{path}: the count line says {declared} rows but the file has {len(values)}; using the rows",
            stacklevel=3,
        )
    return Table(path, names, values, numbers, declared)


def _looks_like_image_name(token: str) -> bool:
    return Path(token).suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")
