"""`facegan sr apply`: super-resolve a folder or a whole dataset into a labelled folder.

Inputs and how they reach the model's LR size (S_lr; the output is S_hr = scale * S_lr):

- a folder (SRC): every file below it (sorted; non-images are listed as skipped). The images are
  assumed to be faces aligned like the training data (outputs of `facegan align`, or a
  dataset's aligned crops, with the checkpoint's template); they are NOT aligned here. Each is
  centre-cropped to a square and resized with antialiased bicubic (data_prep.transforms.resize_images,
  the resampling of training) to S_lr x S_lr; an image already at S_lr is used unchanged.
- a dataset (--dataset NAME --root DIR): opened with data_prep.sources, aligned once through the
  aligned-face cache at S_hr with the checkpoint's template (as in training), and each aligned
  face downsampled to S_lr with the same antialiased bicubic. Faces the aligner cannot use are
  skipped with the cache's reason.

Outputs: DST/<source path relative to SRC or the dataset root, suffix .png>, RGB at S_hr.

Manifest, written to be read back by data_prep's folder_csv reader (`load_folder_csv(DST)`):
- DST/labels.csv: columns path (the output, relative to DST), source (the input path), identity
  and split (when the source has them), then one column per label task (binary 0/1,
  categorical/ordinal the class name, regression the number; empty = no label);
- DST/labels.schema.yaml: the source's label schema (tasks with kinds and classes) and
  `ignore: [source]`, so DST reads back with the same schema, identities and splits;
- DST/skipped.csv: source, reason (data_prep.images.ImageLoadError.reason, or the aligner's),
  detail: inputs that could not be used, rewritten after every batch;
- DST/sr_apply.json: the checkpoint, its step and fingerprint, the input and the resize rule.

Resumable: an output file is written atomically (temporary file, then rename) and only then is
its manifest row appended and fsynced, so every row names a complete file. A rerun reads the
manifest, keeps the rows whose file exists (dropping a row cut short by a crash), and
processes only the rest. A rerun with another checkpoint or input refuses unless --restart.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import yaml

from data_prep.folder_job import JobShard, ManifestAppender, job_shard, merge_parts, read_rows, unique_output_names
from data_prep.images import encode_png
from engine.checkpoint import atomic_write_files, atomic_write_text, remove_stale_temporaries
from engine.errors import FaceganError
from gan.sr.inference import lr_from_image

__all__ = ["apply_sr", "read_manifest", "MANIFEST_FILE", "SCHEMA_FILE", "SKIPPED_FILE", "INFO_FILE",
           "SRApplyError"]

log = logging.getLogger(__name__)

MANIFEST_FILE = "labels.csv"
SCHEMA_FILE = "labels.schema.yaml"
SKIPPED_FILE = "skipped.csv"
INFO_FILE = "sr_apply.json"
_RESERVED = ("path", "source", "identity", "split", "file", "filename", "image")


class SRApplyError(FaceganError):
    """`sr apply` cannot run as asked (bad paths, a DST from another run, a clashing schema)."""


@dataclass
class _Item:
    source: str
    output: str
    labels: dict[str, Any] = field(default_factory=dict)
    identity: str | None = None
    split: str | None = None
    row: int | None = None  # dataset mode: position in the aligned cache view


def _relative_to(path: Path, root: Path | None) -> Path:
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve())
        except ValueError:
            pass
    return Path(path.name)


def _cell(task, value) -> str:
    from data_prep.datasets.schema import TaskKind

    if task.kind is TaskKind.BINARY:
        return str(int(value))
    if task.kind is TaskKind.REGRESSION:
        return repr(float(value))
    return task.classes[int(value)]


def read_manifest(path: Path | str) -> list[dict[str, str]]:
    """The rows of a labels.csv written by `sr apply` (complete lines only)."""
    return [row for row in read_rows(path) if row.get("path")]


def _csv_line(values: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


class _Inputs:
    """The items to super-resolve, their schema, and how to load their LR images."""

    def __init__(self, items: list[_Item], schema, skipped: list[tuple[str, str, str]], description: dict, loader):
        self.items = items
        self.schema = schema
        self.skipped = skipped
        self.description = description
        self._loader = loader

    def load(self, items: Sequence[_Item], lr_size: int) -> Iterator[tuple[_Item, torch.Tensor | None, str, str]]:
        return self._loader(items, lr_size)


def _folder_inputs(src: Path, lr_size: int) -> _Inputs:
    from data_prep.datasets.schema import LabelSchema
    from data_prep.images import MIN_SIDE, ImageLoadError, list_images, load_rgb

    if not src.is_dir():
        raise SRApplyError(f"input folder not found: {src}")
    paths = list_images(src)
    if not paths:
        raise SRApplyError(f"no files found below {src}")
    outputs = unique_output_names([p.relative_to(src).as_posix() for p in paths], ".png", keep_own_suffix=True)
    items = [_Item(source=p.relative_to(src).as_posix(), output=o) for p, o in zip(paths, outputs)]
    min_side = min(MIN_SIDE, lr_size)

    def loader(batch: Sequence[_Item], size: int):
        for item in batch:
            try:
                image = load_rgb(src / item.source, min_side=min_side)
            except ImageLoadError as exc:
                yield item, None, exc.reason, exc.detail
                continue
            yield item, lr_from_image(image, size), "", ""

    description = {"mode": "folder", "folder": str(src.resolve()),
                   "resize": "centre square crop, antialiased bicubic to the LR size (inputs assumed aligned)"}
    return _Inputs(items, LabelSchema(), [], description, loader)


def _dataset_inputs(name: str, root: str, split: str, template: str, align: bool, hr_size: int, cache_dir: Path,
                    progress: bool) -> _Inputs:
    from data_prep.sources import SourceConfig, aligned_cache, open_source

    config = SourceConfig(source=name, root=root, align=align, template=template,
                          cache_dir=str(cache_dir / f"{name}-{hr_size}-{template if align else 'unaligned'}"))
    # out_dir = cache_dir: the synthetic source, without a root, is generated inside the cache folder
    dataset = open_source(config, cache_dir, min_image_size=hr_size)
    if split != "all":
        dataset = dataset.subset(split=split)
        if len(dataset) == 0:
            raise SRApplyError(f"{name}: no images in split {split!r} (use --split all)")
    skipped = [(str(s.source) + (f":{s.line}" if s.line is not None else ""), "missing", s.reason) for s in dataset.skipped]
    cache = aligned_cache(dataset, config, hr_size, cache_dir, progress=progress)
    for item in cache.skipped:
        reason, _, detail = item.reason.partition(":")
        skipped.append((item.source, reason.strip(), detail.strip()))
    records = cache.records
    dataset_root = Path(dataset.root) if dataset.root is not None else (Path(root) if root else None)
    outputs = unique_output_names([_relative_to(Path(r.path), dataset_root).as_posix() for r in records], ".png",
                                  keep_own_suffix=True)
    items = [_Item(source=str(r.path), output=o, labels=dict(r.labels), identity=r.identity, split=r.split, row=i)
             for i, (r, o) in enumerate(zip(records, outputs))]

    def loader(batch: Sequence[_Item], size: int):
        from data_prep.transforms import resize_images

        hr = cache.get_batch([item.row for item in batch]).float()
        lr = resize_images(hr, size).clamp_(0, 255).round_().to(torch.uint8)
        for item, image in zip(batch, lr):
            yield item, image, "", ""

    description = {"mode": "dataset", "dataset": name, "root": str(Path(root).resolve()) if root else "", "split": split,
                   "align": align, "template": template, "cache": config.cache_dir,
                   "resize": f"aligned at the HR size ({hr_size} px) through the aligned-face cache, then antialiased "
                             "bicubic to the LR size"}
    return _Inputs(items, cache.schema, skipped, description, loader)


def _header(inputs: _Inputs) -> list[str]:
    clash = [t.name for t in inputs.schema if t.name.lower() in _RESERVED]
    if clash:
        raise SRApplyError(f"label task name(s) {clash} clash with the manifest's own columns {list(_RESERVED)}")
    header = ["path", "source"]
    if any(item.identity is not None for item in inputs.items):
        header.append("identity")
    if inputs.items and all(item.split is not None for item in inputs.items):
        header.append("split")
    return header + inputs.schema.names


def _row(item: _Item, header: Sequence[str], schema) -> dict[str, str]:
    fixed = {"path": item.output, "source": item.source, "identity": item.identity or "", "split": item.split or ""}
    row = {}
    for column in header:
        if column in fixed:
            row[column] = fixed[column]
        elif column in item.labels:
            row[column] = _cell(schema[column], item.labels[column])
        else:
            row[column] = ""
    return row


def _write_skipped(path: Path, skipped: list[tuple[str, str, str]]) -> None:
    atomic_write_text(path, _csv_line(["source", "reason", "detail"]) + "".join(_csv_line(row) for row in skipped))


def _merge_skipped(path: Path, shard: JobShard, order: dict[str, int]) -> None:
    rows = [tuple(row[c] for c in ("source", "reason", "detail")) for part in shard.parts(path) for row in read_rows(part)]
    rows = sorted(dict.fromkeys(rows), key=lambda row: order.get(row[0], len(order)))
    _write_skipped(path, rows)
    for part in shard.parts(path):
        part.unlink(missing_ok=True)


def _batches(items: Sequence[_Item], size: int) -> Iterator[Sequence[_Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def apply_sr(
    checkpoint: str | Path,
    dst: str | Path,
    *,
    src: str | Path | None = None,
    dataset: str | None = None,
    root: str = "",
    split: str = "all",
    template: str | None = None,
    align: bool = True,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    fast: bool = True,
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Super-resolve `src` (a folder) or `dataset` into `dst`; see the module docstring.

    Returns a summary: written, already_done, skipped, seconds, images_per_second, manifest,
    skipped_file, info.
    """
    from tqdm.auto import tqdm

    from engine.checkpoint import load_checkpoint
    from engine.fold import optimize_for_inference
    from gan.metrics.batch import to_uint8
    from gan.sr.inference import load_sr_checkpoint

    if (src is None) == (dataset is None):
        raise SRApplyError("give either an input folder (src) or a dataset name, not both and not neither")
    if batch_size < 1:
        raise SRApplyError(f"batch size must be >= 1, got {batch_size}")
    device = torch.device(device)
    dst = Path(dst)
    if src is not None and dst.resolve() == Path(src).resolve():
        raise SRApplyError("the output folder must differ from the input folder")
    loaded = load_sr_checkpoint(checkpoint, use_ema=use_ema, device=device)
    fingerprint = load_checkpoint(checkpoint, map_location="cpu").get("fingerprint")
    lr_size, hr_size = loaded.input_size, loaded.output_size

    shard = job_shard()
    if restart and dst.exists() and shard.rank == 0:
        # Only what an earlier run wrote: the outputs its manifest lists, and its own files.
        for row in read_manifest(dst / MANIFEST_FILE):
            (dst / row["path"]).unlink(missing_ok=True)
        for name in (MANIFEST_FILE, SCHEMA_FILE, SKIPPED_FILE, INFO_FILE):
            (dst / name).unlink(missing_ok=True)
    dst.mkdir(parents=True, exist_ok=True)

    def read_inputs() -> _Inputs:
        if src is not None:
            return _folder_inputs(Path(src), lr_size)
        train_data = loaded.run_config.get("data", {})
        chosen_template = template or train_data.get("template", "thesis")
        return _dataset_inputs(dataset, root, split, chosen_template, align, hr_size,
                               Path(cache_dir) if cache_dir else dst / ".cache", progress and shard.rank == 0)

    # Under torchrun rank 0 prepares alone (a restart's deletions, a dataset's aligned cache, the
    # info and the manifest); the other ranks then read what it made.
    if shard.rank == 0:
        inputs = read_inputs()
    shard.barrier()
    if shard.rank != 0:
        inputs = read_inputs()
    header = _header(inputs)

    info = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_step": loaded.step,
        "checkpoint_fingerprint": fingerprint,
        "weights": "ema" if loaded.ema else "raw",
        "scale": loaded.scale,
        "lr_size": lr_size,
        "hr_size": hr_size,
        "input": inputs.description,
        "columns": header,
    }
    info_path = dst / INFO_FILE
    manifest_path = dst / MANIFEST_FILE
    if shard.rank == 0:
        _prepare(dst, info, info_path, manifest_path, header, inputs)
    shard.barrier()
    part_path = shard.part(manifest_path)
    # Keep the rows whose output exists (rank 0 rewrote the manifest so; a part is this rank's own).
    done_rows = [row for row in read_manifest(manifest_path) if (dst / row["path"]).is_file()]
    if shard.sharded:
        done_rows += [row for row in read_manifest(part_path) if (dst / row["path"]).is_file()]
    done = {row["path"] for row in done_rows}
    if shard.sharded:
        batches = [[item for item in batch if item.output not in done] for batch in shard.batches(inputs.items, batch_size)]
        pending = [item for batch in batches for item in batch]
    else:
        pending = [item for item in inputs.items if item.output not in done]

    model: torch.nn.Module = loaded.generator
    if fast:
        model = optimize_for_inference(loaded.generator, channels_last=True)
    skipped = list(inputs.skipped)
    written = 0
    started = time.perf_counter()
    bar = tqdm(total=len(inputs.items), initial=len(inputs.items) - len(pending), desc="sr apply", unit="img",
               disable=not progress, dynamic_ncols=True)
    try:
        work = batches if shard.sharded else list(_batches(pending, batch_size))
        with ManifestAppender(part_path, header) as manifest:
            for batch in work:
                ready: list[_Item] = []
                images: list[torch.Tensor] = []
                for item, image, reason, detail in inputs.load(batch, lr_size):
                    if image is None:
                        skipped.append((item.source, reason, detail))
                        bar.update(1)
                        continue
                    ready.append(item)
                    images.append(image)
                if ready:
                    lr = torch.stack(images).to(device).float().div_(127.5).sub_(1.0)
                    with torch.inference_mode():
                        sr = model(lr).float().clamp_(-1.0, 1.0)
                    pixels = to_uint8(sr).permute(0, 2, 3, 1).cpu().numpy()
                    # The batch's images on disk first, then their rows: a row never names a missing file.
                    atomic_write_files([(dst / item.output, encode_png(array)) for item, array in zip(ready, pixels)])
                    manifest.write([_row(item, header, inputs.schema) for item in ready])
                    written += len(ready)
                    bar.update(len(ready))
                _write_skipped(shard.part(dst / SKIPPED_FILE), skipped)
        if shard.sharded:
            shard.barrier()  # every rank's part is complete
            if shard.rank == 0:
                order = {item.output: index for index, item in enumerate(inputs.items)}
                merge_parts(manifest_path, shard, header, order, key="path")
                _merge_skipped(dst / SKIPPED_FILE, shard, {item.source: index for index, item in enumerate(inputs.items)})
            shard.barrier()
    finally:
        bar.close()
    if not shard.sharded:
        _write_skipped(dst / SKIPPED_FILE, skipped)
    seconds = time.perf_counter() - started
    summary = {
        "written": written,
        "already_done": len(done),
        "skipped": len(skipped),
        "seconds": seconds,
        "images_per_second": written / seconds if seconds > 0 else 0.0,
        "manifest": str(manifest_path),
        "skipped_file": str(dst / SKIPPED_FILE),
        "info": str(info_path),
        "fast_path": fast,
        "device": str(device),
    }
    info["last_run"] = {k: summary[k] for k in ("written", "already_done", "skipped", "seconds", "images_per_second")}
    if shard.sharded:
        summary["rank"], summary["world_size"] = shard.rank, shard.world
        info["last_run"]["processes"] = shard.world  # rank 0's share; every rank's rows are in the manifest
    if shard.rank == 0:
        atomic_write_text(info_path, json.dumps(info, indent=2))
    log.info("sr apply: %d written, %d already done, %d skipped in %.1f s", written, len(done), len(skipped), seconds)
    return summary


def _prepare(dst: Path, info: dict, info_path: Path, manifest_path: Path, header: list[str], inputs: _Inputs) -> None:
    """Check that DST holds this run's outputs (or none), write its info and schema, and rewrite
    the manifest without rows whose output is missing (a row cut short by a crash)."""
    if info_path.is_file():
        previous = json.loads(info_path.read_text())
        keys = ("checkpoint_fingerprint", "checkpoint_step", "weights", "input", "columns")
        changed = [k for k in keys if previous.get(k) != info.get(k)]
        if changed:
            raise SRApplyError(
                f"{dst} holds outputs of another run (different {', '.join(changed)}); use another DST, or --restart "
                "to discard them"
            )
    elif manifest_path.is_file():
        raise SRApplyError(f"{manifest_path} exists but {info_path} does not; use another DST or --restart")
    if manifest_path.is_file():
        with open(manifest_path, encoding="utf-8") as handle:
            existing_header = next(csv.reader([handle.readline().rstrip("\n")]), [])
        if existing_header != header:
            raise SRApplyError(f"{manifest_path} has columns {existing_header}, this run writes {header}; use --restart")
    # A kill during an output's atomic write leaves its temporary file; the output is redone below.
    remove_stale_temporaries(dst)
    atomic_write_text(info_path, json.dumps(info, indent=2))
    schema_doc = {"tasks": [_schema_entry(t) for t in inputs.schema], "ignore": ["source"]}
    atomic_write_text(dst / SCHEMA_FILE, yaml.safe_dump(schema_doc, sort_keys=False))

    # Keep the rows whose output exists; rewriting drops a row cut short by a crash.
    done_rows = [row for row in read_manifest(manifest_path) if (dst / row["path"]).is_file()]
    atomic_write_text(manifest_path, _csv_line(header) + "".join(_csv_line([r.get(c, "") for c in header]) for r in done_rows))


def _schema_entry(task) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": task.name, "kind": task.kind.value}
    if task.classes:
        entry["classes"] = list(task.classes)
    if task.value_range is not None:
        entry["value_range"] = [float(v) for v in task.value_range]
    if task.description:
        entry["description"] = task.description
    return entry
