"""`facegan data info NAME ROOT`: read a dataset and print what it holds.

Counts per split (images and identities), each task's kind with its label coverage and
positive rate / class counts / value range, Adience folds when present, and the skipped
samples with their reasons, so that a user sees at once whether their copy reads as expected.
"""

from __future__ import annotations

import argparse
import inspect
from collections import Counter
from typing import Any

import yaml

from data_prep.datasets.base import FaceDataset
from data_prep.datasets.registry import available_datasets, get_reader, load_dataset
from data_prep.datasets.schema import TaskKind
from data_prep.datasets.textio import DatasetOptionError

__all__ = ["register", "describe_dataset", "parse_options"]


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """`['test_fold=0', 'images=wild']` -> {'test_fold': 0, 'images': 'wild'} (YAML scalars)."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DatasetOptionError(f"--option takes KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else None
    return options


def _task_line(dataset: FaceDataset, task_index: int) -> str:
    task = dataset.schema.tasks[task_index]
    values = [r.labels[task.name] for r in dataset.records if task.name in r.labels]
    head = f"  {task.name:<22} {task.kind.value:<11} labelled {len(values):>7}/{len(dataset)}"
    if not values:
        return head
    if task.kind is TaskKind.BINARY:
        return f"{head}  positive {100.0 * sum(values) / len(values):5.1f}%"
    if task.kind is TaskKind.REGRESSION:
        mean = sum(values) / len(values)
        return f"{head}  range {min(values):g}..{max(values):g}  mean {mean:.1f}"
    counts = Counter(int(v) for v in values)
    classes = ", ".join(f"{name} {counts.get(i, 0)}" for i, name in enumerate(task.classes))
    return f"{head}  {classes}"


def describe_dataset(dataset: FaceDataset, max_skipped: int = 10) -> str:
    """The multi-line summary `facegan data info` prints."""
    lines = [
        f"{dataset.name}: {len(dataset)} images, {len(dataset.identities())} identities, {len(dataset.schema)} tasks"
    ]
    if dataset.root is not None:
        lines.append(f"root: {dataset.root}")
    by_split: dict[str, list] = {}
    for record in dataset.records:
        by_split.setdefault(str(record.split), []).append(record)
    lines.append("splits:")
    for split in sorted(
        by_split,
        key=lambda s: ("train", "val", "test", "None").index(s) if s in ("train", "val", "test", "None") else 9,
    ):
        records = by_split[split]
        identities = {r.identity for r in records if r.identity is not None}
        lines.append(f"  {split:<6} {len(records):>7} images  {len(identities):>6} identities")
    folds = Counter(r.meta["fold"] for r in dataset.records if "fold" in r.meta)
    if folds:
        lines.append("folds: " + ", ".join(f"{fold}: {count}" for fold, count in sorted(folds.items())))
    lines.append("tasks:")
    lines.extend(_task_line(dataset, i) for i in range(len(dataset.schema)))
    lines.append(f"skipped: {len(dataset.skipped)}")
    for item in dataset.skipped[:max_skipped]:
        lines.append(f"  {item}")
    if len(dataset.skipped) > max_skipped:
        lines.append(f"  ... and {len(dataset.skipped) - max_skipped} more")
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    options = parse_options(args.option)
    if args.split is not None:
        options["split"] = args.split
    reader = get_reader(args.name)
    accepted = [
        p.name for p in inspect.signature(reader).parameters.values() if p.kind is p.KEYWORD_ONLY or p.name == "split"
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetOptionError(f"dataset {args.name!r} has no option(s) {unknown}; it takes {accepted}")
    dataset = load_dataset(args.name, args.root, **options)
    print(describe_dataset(dataset, args.max_skipped))
    return 0


def register(data_sub: argparse._SubParsersAction) -> None:
    """Add `data info` to the `facegan data` subcommands."""
    parser = data_sub.add_parser(
        "info",
        help="read a dataset and print its splits, tasks and skipped samples",
        description=(
            "Read a dataset with its reader and print the number of images and identities per split, "
            "each task's kind with its coverage and positive rate, class counts or value range, and "
            "the samples that were skipped with the reason. Datasets: " + ", ".join(available_datasets()) + "."
        ),
    )
    parser.add_argument("name", help="dataset reader name: " + ", ".join(available_datasets()))
    parser.add_argument("root", help="the dataset's root folder (as downloaded)")
    parser.add_argument("--split", default=None, help="only this split: train, val or test (default: all)")
    parser.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a reader option, repeatable, e.g. --option images=wild (CelebA) or --option test_fold=0 (Adience)",
    )
    parser.add_argument("--max-skipped", type=int, default=10, help="how many skipped samples to list (default 10)")
    parser.set_defaults(func=_info)
