"""A folder of images plus one CSV of labels: for any dataset without a dedicated reader.

The CSV (default `labels.csv` in `root`) has a header row. Delimiter: `,`, `;` or tab, taken
from the header line. Columns:
- `path` (required; `file`, `filename`, `image` are accepted too): the image path relative to
  the image folder (`images_dir`, default `root`);
- `identity` (optional): a person id; used to keep people inside one split;
- `split` (optional): train / val (also `valid`, `validation`, `dev`) / test. If the column
  exists every row must fill it; without it, records get a seeded identity-disjoint split
  (see `splits.py`);
- every other column is a label column. An empty cell means "no label" for that image.

Schema. A sidecar next to the CSV, `<csv stem>.schema.yaml` / `.yml` / `.json`, or
`schema.yaml` / `schema.json` in `root`, or the `schema` argument (a path, a `LabelSchema`, or
the same data as a dict), declares the tasks:

    tasks:
      - {name: Smiling, kind: binary}
      - {name: Hair, kind: categorical, classes: [black, blond, brown, gray]}
      - {name: Age_group, kind: ordinal, classes: ["0-19", "20-29", "30-44", "45-59", "60+"], column: age}
      - {name: Age, kind: regression, value_range: [0, 100]}

(`column` defaults to `name`; a bare list of tasks works too; `ignore: [col, ...]` names
columns to leave out.) With a declared schema only the declared columns are read. Cell values:
binary `0`/`1`, `-1`/`1` (CelebA style), `yes`/`no`, `true`/`false`; categorical and ordinal
a class name, or else an integer class index; regression a number.

Without a schema, each label column's kind is inferred from its non-empty cells:
- only `0`/`1` (or only `-1`/`1`) -> binary;
- all numbers -> regression, range = the observed min..max;
- all of the form `a-b` or `a+` (age groups such as `20-29`, `60+`) -> ordinal, classes
  ordered by their lower bound;
- otherwise strings with at most `max_categories` (default 20) distinct values -> categorical,
  classes sorted alphabetically;
- anything else is an error asking for a schema.
A thesis-style "LBS" set (nine categorical attributes and age in five groups) therefore reads
with inference alone when the groups are written `a-b`/`a+`, and exactly as intended with a
sidecar.

Errors: a row with the wrong number of fields, a value the task cannot take, an empty `path`,
a repeated path, or a missing/partial `split` raises `LabelFileError` with file and line; a
row whose image is not on disk becomes a `SkippedSample`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from data_prep.datasets.base import FaceDataset, require_dir, require_file
from data_prep.datasets.record import LabelFileError, SampleRecord, SkippedSample
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from data_prep.datasets.splits import DEFAULT_FRACTIONS, identity_disjoint_split
from data_prep.datasets.textio import (
    DatasetOptionError,
    check_split_argument,
    list_file_names,
    normalize_split,
    read_label_lines,
)

__all__ = ["load_folder_csv", "infer_schema", "read_schema_file", "PATH_COLUMNS"]

log = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "file", "filename", "image")
_BINARY_VALUES = {"0": 0, "1": 1, "-1": 0, "+1": 1, "yes": 1, "no": 0, "true": 1, "false": 0, "y": 1, "n": 0}
_GROUP = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-\s*\d+(?:\.\d+)?|\+)")


def _is_number(token: str) -> bool:
    try:
        value = float(token)
    except ValueError:
        return False
    return value == value


def _task_from_entry(entry: Any, source: str) -> tuple[Task, str]:
    if not isinstance(entry, Mapping) or "name" not in entry or "kind" not in entry:
        raise ValueError(f"{source}: each task needs at least 'name' and 'kind', got {entry!r}")
    data = dict(entry)
    column = str(data.pop("column", data["name"]))
    try:
        return Task.from_dict(data), column
    except ValueError as exc:
        raise ValueError(f"{source}: task {data.get('name')!r}: {exc}") from None


def _parse_schema_data(data: Any, source: str) -> tuple[list[tuple[Task, str]], set[str]]:
    ignore: set[str] = set()
    if isinstance(data, Mapping):
        ignore = {str(c) for c in data.get("ignore", []) or []}
        data = data.get("tasks")
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of tasks or a mapping with 'tasks'")
    return [_task_from_entry(e, source) for e in data], ignore


def read_schema_file(path: Path | str) -> tuple[list[tuple[Task, str]], set[str]]:
    """A YAML/JSON schema sidecar -> ([(task, column)], ignored columns)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LabelFileError(path, line, f"not UTF-8 text (byte {raw[exc.start]:#04x}); is this a schema file?") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else getattr(exc, "lineno", None)
        raise LabelFileError(path, line, f"unreadable schema: {exc}") from None
    try:
        return _parse_schema_data(data, str(path))
    except ValueError as exc:
        raise LabelFileError(path, None, str(exc)) from None


def infer_schema(columns: Mapping[str, Sequence[str]], max_categories: int = 20) -> LabelSchema:
    """Infer a task per column from its cell values (empty cells ignored); see the module
    docstring. Raises ValueError naming a column that fits no rule."""
    tasks = []
    for name, cells in columns.items():
        values = {c.strip() for c in cells if c.strip() != ""}
        if not values:
            raise ValueError(f"column {name!r} is empty; drop it or declare it in a schema")
        if values <= {"0", "1"} or values <= {"-1", "1"}:
            tasks.append(Task(name, TaskKind.BINARY))
        elif all(_is_number(v) for v in values):
            numbers = [float(v) for v in values]
            low, high = min(numbers), max(numbers)
            tasks.append(Task(name, TaskKind.REGRESSION, value_range=(low, high) if low < high else None))
        elif all(_GROUP.fullmatch(v) for v in values) and len(values) >= 2:
            ordered = sorted(values, key=lambda v: float(_GROUP.fullmatch(v).group(1)))  # type: ignore[union-attr]
            tasks.append(Task(name, TaskKind.ORDINAL, classes=tuple(ordered)))
        elif len(values) <= max_categories and len(values) >= 2:
            tasks.append(Task(name, TaskKind.CATEGORICAL, classes=tuple(sorted(values))))
        else:
            raise ValueError(
                f"column {name!r}: cannot infer a task from {len(values)} distinct values "
                f"(e.g. {sorted(values)[:3]}); declare it in a schema sidecar"
            )
    return LabelSchema(tuple(tasks))


def _convert(task: Task, token: str) -> int | float:
    if task.kind is TaskKind.BINARY:
        value = _BINARY_VALUES.get(token.lower())
        if value is None:
            raise ValueError(f"{token!r} is not a binary value (0/1, -1/1, yes/no, true/false)")
        return value
    if task.kind is TaskKind.REGRESSION:
        value = float(token)
        task.validate(value)
        return value
    if token in task.classes:
        return task.classes.index(token)
    if token.lstrip("-").isascii() and token.lstrip("-").isdigit() and 0 <= int(token) < len(task.classes):
        return int(token)
    raise ValueError(f"{token!r} is neither a class of {task.name} {list(task.classes)} nor a class index")


def _find_sidecar(csv_path: Path, root: Path) -> Path | None:
    candidates = [csv_path.with_name(f"{csv_path.stem}.schema{s}") for s in (".yaml", ".yml", ".json")]
    candidates += [root / "schema.yaml", root / "schema.yml", root / "schema.json"]
    return next((c for c in candidates if c.is_file()), None)


def _read_rows(path: Path) -> tuple[int, list[str], list[tuple[int, list[str]]]]:
    content = read_label_lines(path)
    if not content.lines:
        raise LabelFileError(path, None, "the file is empty")
    header_line, header = content.lines[0]
    delimiter = next((d for d in (",", ";", "\t") if d in header), ",")
    columns = [c.strip() for c in next(csv.reader([header], delimiter=delimiter))]
    rows = []
    for number, line in content.lines[1:]:
        fields = next(csv.reader(io.StringIO(line), delimiter=delimiter))
        if len(fields) != len(columns):
            raise LabelFileError(path, number, f"expected {len(columns)} fields (as the header), found {len(fields)}")
        rows.append((number, [f.strip() for f in fields]))
    return header_line, columns, rows


def load_folder_csv(
    root: Path | str,
    split: str | None = None,
    *,
    csv_file: Path | str = "labels.csv",
    images_dir: Path | str | None = None,
    schema: Path | str | LabelSchema | Mapping | list | None = None,
    max_categories: int = 20,
    name: str = "folder_csv",
    split_seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_FRACTIONS,
    transform: Callable | None = None,
) -> FaceDataset:
    """Read a folder of images with a labels CSV (see the module docstring)."""
    root = Path(root)
    split = check_split_argument(split)
    require_dir(root, "dataset folder")
    csv_path = require_file(root / csv_file, "labels CSV")
    image_dir = require_dir(root / images_dir, "image folder") if images_dir is not None else root
    header_line, columns, rows = _read_rows(csv_path)
    lowered = [c.lower() for c in columns]
    path_at = next((lowered.index(c) for c in PATH_COLUMNS if c in lowered), None)
    if path_at is None:
        raise LabelFileError(csv_path, header_line, f"no path column (one of {list(PATH_COLUMNS)}) in {columns}")
    identity_at = lowered.index("identity") if "identity" in lowered else None
    split_at = lowered.index("split") if "split" in lowered else None
    reserved = {path_at, identity_at, split_at}

    if schema is None:
        sidecar = _find_sidecar(csv_path, root)
        if sidecar is not None:
            schema = sidecar
    declared: list[tuple[Task, str]] | None = None
    ignore: set[str] = set()
    if isinstance(schema, LabelSchema):
        declared = [(t, t.name) for t in schema]
    elif isinstance(schema, (str, Path)):
        declared, ignore = read_schema_file(root / schema)
    elif schema is not None:
        try:
            declared, ignore = _parse_schema_data(schema, "schema argument")
        except ValueError as exc:
            raise DatasetOptionError(str(exc)) from None

    label_columns = [(i, c) for i, c in enumerate(columns) if i not in reserved and c not in ignore]
    if declared is None:
        try:
            inferred = infer_schema({c: [r[i] for _, r in rows] for i, c in label_columns}, max_categories)
        except ValueError as exc:
            raise LabelFileError(csv_path, None, str(exc)) from None
        declared = [(t, t.name) for t in inferred]
    else:
        missing = [c for _, c in declared if c not in columns]
        if missing:
            raise LabelFileError(csv_path, header_line, f"schema columns {missing} not in the CSV header {columns}")
        unused = [c for _, c in label_columns if c not in {col for _, col in declared}]
        if unused:
            log.info("%s: columns not in the schema, not read: %s", csv_path, unused)
    tasks = [(t, columns.index(c)) for t, c in declared]

    listings: dict[Path, set[str]] = {}
    records: list[SampleRecord] = []
    skipped: list[SkippedSample] = []
    seen: dict[str, int] = {}
    for number, fields in rows:
        relative = fields[path_at]
        if not relative:
            raise LabelFileError(csv_path, number, "empty path")
        if relative in seen:
            raise LabelFileError(csv_path, number, f"{relative} is listed twice (first at line {seen[relative]})")
        seen[relative] = number
        labels: dict[str, int | float] = {}
        for task, index in tasks:
            token = fields[index]
            if token == "":
                continue
            try:
                labels[task.name] = _convert(task, token)
            except ValueError as exc:
                raise LabelFileError(csv_path, number, f"column {columns[index]!r}: {exc}") from None
        row_split = None
        if split_at is not None:
            if not fields[split_at]:
                raise LabelFileError(csv_path, number, "empty split (the split column must be filled on every row)")
            row_split = normalize_split(fields[split_at], csv_path, number)
        image = image_dir / relative
        folder = image.parent
        if folder not in listings:
            listings[folder] = list_file_names(folder) if folder.is_dir() else set()
        if image.name not in listings[folder]:
            skipped.append(SkippedSample(str(csv_path), number, f"image {relative} not found in {image_dir}"))
            continue
        identity = (fields[identity_at] or None) if identity_at is not None else None
        records.append(SampleRecord(image, labels, identity, row_split, {}))
    if split_at is None:
        records = identity_disjoint_split(records, split_fractions, seed=split_seed)
    if split is not None:
        records = [r for r in records if r.split == split]
    return FaceDataset(name, records, LabelSchema(tuple(t for t, _ in tasks)), skipped, transform, root)
