"""Align a whole folder (or dataset) to disk, resumably: `align_folder`.

Outputs under DST mirror SRC's relative paths (``a/b/img.jpg`` -> ``a/b/img.png``; when two
inputs would map to one output, e.g. ``x.jpg`` and ``x.png``, both keep their full name:
``x.jpg.png``). Beside them:

- ``manifest.csv``: one row per input (`MANIFEST_COLUMNS`), appended and fsynced after each
  batch, and only once that batch's images are in place. Each image is written to a temporary
  file and renamed, so a kill leaves either a whole image or none.
- ``summary.json``: counts over the whole manifest plus the config, rewritten at the end.
- ``align_config.json``: the settings that shape the outputs. A rerun with different ones
  is refused rather than silently mixing two alignments in one folder.

Resuming: inputs already in the manifest are skipped, so an interrupted run continues where
it stopped and never rewrites a finished output. A row cut short by a kill is discarded.

Coordinates in the manifest are in the source file's upright pixel frame (after EXIF
rotation). `load_rgb` decodes absurdly large photos at reduced size; their landmarks, box and
transform are scaled back to the file's full size.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from data_prep.align.aligner import AlignConfig, AlignResult, FaceAligner
from data_prep.folder_job import (JobShard, ManifestAppender, ManifestError, job_shard, merge_parts, read_rows,
                                  repair_manifest, unique_output_names)
from data_prep.images import ImageLoadError, encode_png, list_images, load_rgb
from engine.checkpoint import atomic_write_files, atomic_write_text, remove_stale_temporaries
from engine.errors import FaceganError

__all__ = [
    "AlignRunError",
    "AlignInput",
    "MANIFEST_COLUMNS",
    "OUTPUT_FORMATS",
    "align_folder",
    "read_manifest",
    "format_summary",
]

MANIFEST_COLUMNS = (
    "source", "output", "status", "reason", "detail", "score", "size", "box", "landmarks", "transform", "fit_rms",
)
OUTPUT_FORMATS = ("png", "jpg")
# Settings that change what an output image looks like; resuming with other values would
# mix two alignments in one folder. Device and batch size only change speed.
_SHAPING_KEYS = (
    "template", "output_size", "selection", "min_score", "on_no_face", "min_face_size", "border", "detect_max_side", "retry",
    "face_fraction",
)


class AlignRunError(FaceganError):
    """The folder run cannot start (missing SRC, DST inside a run with other settings...)."""


@dataclass(frozen=True)
class AlignInput:
    """One file to align: its path, its manifest key (path relative to SRC), optional landmarks."""

    path: Path
    key: str
    landmarks: np.ndarray | None = None


def _fmt(values, digits: int = 2) -> str:
    if values is None:
        return ""
    return " ".join(f"{v:.{digits}f}" for v in np.asarray(values, dtype=np.float64).ravel())


def _fmt_matrix(matrix) -> str:
    if matrix is None:
        return ""
    return " ".join(f"{v:.6g}" for v in np.asarray(matrix, dtype=np.float64).ravel())


def read_manifest(path: Path | str) -> list[dict[str, str]]:
    """The complete rows of a manifest.csv (a trailing row cut short by a kill is ignored)."""
    try:
        return read_rows(path, MANIFEST_COLUMNS)
    except ManifestError as exc:
        raise AlignRunError(f"{exc}; this is not a manifest written by this version of `facegan align`") from None


def _folder_inputs(src: Path, dst: Path) -> list[AlignInput]:
    dst_resolved = dst.resolve()
    inputs = []
    for path in list_images(src):
        resolved = path.resolve()
        # A DST inside SRC must not feed its own outputs (and manifest) back in on a rerun.
        if resolved == dst_resolved or dst_resolved in resolved.parents:
            continue
        inputs.append(AlignInput(path, path.relative_to(src).as_posix()))
    return inputs


def _dataset_inputs(name: str, root: Path) -> list[AlignInput]:
    try:
        from data_prep.datasets.registry import load_dataset
    except ImportError as exc:  # the registry is optional at this layer
        raise AlignRunError(f"--dataset needs data_prep.datasets.registry, which could not be imported: {exc}") from exc
    dataset = load_dataset(name, root)
    inputs, seen = [], set()
    for record in dataset.records:
        path = Path(record.path)
        if not path.is_absolute():
            path = root / path
        try:
            key = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            key = path.name
        if key in seen:  # a dataset may list one image under several labels
            continue
        seen.add(key)
        landmarks = record.meta.get("landmarks") if isinstance(record.meta, dict) else None
        inputs.append(AlignInput(path, key, None if landmarks is None else np.asarray(landmarks, dtype=np.float64)))
    return inputs


def _file_frame(path: Path, array: np.ndarray) -> tuple[tuple[int, int], tuple[float, float]]:
    """The file's upright (width, height) and how much larger it is than the decoded array
    along x and y ((1.0, 1.0) unless `load_rgb` decoded a huge image at reduced size)."""
    height, width = array.shape[:2]
    try:
        with Image.open(path) as image:
            file_w, file_h = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # the array decoded fine; a header quirk must not sink the row
        return (width, height), (1.0, 1.0)
    if orientation in (5, 6, 7, 8):
        file_w, file_h = file_h, file_w
    return (file_w, file_h), (file_w / width, file_h / height)


def _rescale_result(result: AlignResult, factor: tuple[float, float]) -> None:
    """Express a result computed on a reduced decode in the file's full-size pixels."""
    if factor == (1.0, 1.0):
        return
    # A resize by f maps pixel centre x to (x + 0.5) / f - 0.5; invert that per axis.
    f = np.asarray(factor)
    if result.landmarks is not None:
        result.landmarks = (result.landmarks + 0.5) * f - 0.5
    if result.box is not None:
        result.box = (result.box + 0.5) * np.tile(f, 2) - 0.5
    if result.transform is not None:
        from data_prep.align.similarity import compose_affine

        to_decoded = np.array([[1 / f[0], 0, 0.5 / f[0] - 0.5], [0, 1 / f[1], 0.5 / f[1] - 0.5]])
        result.transform = compose_affine(result.transform, to_decoded)


def _encode(face: np.ndarray, fmt: str, jpeg_quality: int) -> bytes:
    if fmt == "png":
        # PIL's PNG writer at its default level 6 took 3.5 ms per 128 px face, as long as detecting
        # it; encode_png takes 0.36 ms, for files a third larger (14.5 against 10.9 KB).
        return encode_png(face)
    buffer = io.BytesIO()
    Image.fromarray(face).save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
    return buffer.getvalue()


def _check_settings(dst: Path, config: AlignConfig, fmt: str) -> None:
    settings = {key: value for key, value in config.to_dict().items() if key in _SHAPING_KEYS}
    settings["format"] = fmt
    path = dst / "align_config.json"
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AlignRunError(f"{path}: unreadable ({exc}); use a new DST folder") from exc
        changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
        if changed:
            listing = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
            raise AlignRunError(
                f"{dst} holds an alignment run with other settings ({listing}); resuming would mix two "
                "alignments in one folder. Use a new DST folder, or the previous settings."
            )
    else:
        atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _summarise(rows: list[dict[str, str]], total: int, config: AlignConfig, fmt: str, run: dict[str, Any]) -> dict[str, Any]:
    counts = {"aligned": 0, "center_crop": 0, "no_face": 0}
    unreadable: dict[str, int] = {}
    for row in rows:
        if row["status"] == "unreadable":
            unreadable[row["reason"]] = unreadable.get(row["reason"], 0) + 1
        else:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    done = len(rows)
    return {
        "inputs": total,
        "done": done,
        "pending": max(0, total - done),
        **counts,
        "unreadable": dict(sorted(unreadable.items())),
        "unreadable_total": sum(unreadable.values()),
        "aligned_fraction_of_readable": round(counts["aligned"] / max(1, done - sum(unreadable.values())), 6),
        "format": fmt,
        "config": config.to_dict(),
        "this_run": run,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few human lines from a summary dict."""
    unreadable = ", ".join(f"{k} {v}" for k, v in summary["unreadable"].items()) or "none"
    return (
        f"inputs {summary['inputs']}: done {summary['done']}, pending {summary['pending']}\n"
        f"aligned {summary['aligned']}, center_crop {summary['center_crop']}, no_face {summary['no_face']}, "
        f"unreadable {summary['unreadable_total']} ({unreadable})\n"
        f"this run: {summary['this_run']['processed']} images in {summary['this_run']['seconds']:.1f} s "
        f"({summary['this_run']['images_per_second']:.1f} img/s)"
    )


def align_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config: AlignConfig | None = None,
    *,
    dataset: str | None = None,
    fmt: str = "png",
    limit: int | None = None,
    num_threads: int | None = None,
    progress: bool = True,
    jpeg_quality: int = 95,
    on_batch_end: Callable[[int], None] | None = None,
    aligner: FaceAligner | None = None,
) -> dict[str, Any]:
    """Align every image below `src` (or every image of dataset `dataset` rooted at `src`)
    into `dst`; resumable; returns the summary dict (also written to dst/summary.json).

    `limit` keeps the first N inputs in sorted order, so reruns with the same limit cover the
    same files. `on_batch_end(batch_index)` runs after each batch is on disk (tests use it
    to interrupt a run). `aligner` reuses an existing `FaceAligner` (its config wins).
    """
    src, dst = Path(src), Path(dst)
    if fmt not in OUTPUT_FORMATS:
        raise AlignRunError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    if not src.exists():
        raise AlignRunError(f"source not found: {src}")
    if dataset is None and not src.is_dir():
        raise AlignRunError(f"source must be a folder of images (or a dataset root with --dataset): {src}")
    if limit is not None and limit < 0:
        raise AlignRunError(f"limit must be >= 0, got {limit}")
    if aligner is None:
        aligner = FaceAligner(config or AlignConfig())
    config = aligner.config
    if num_threads is not None:
        from engine.device import configure_threads

        configure_threads(num_threads)

    inputs = _dataset_inputs(dataset, src) if dataset is not None else _folder_inputs(src, dst)
    # Output names are decided over every input, so a --limit run names files as the full run will.
    keys = [item.key for item in inputs]
    outputs = dict(zip(keys, unique_output_names(keys, "." + fmt)))
    if limit is not None:
        inputs = inputs[:limit]

    dst.mkdir(parents=True, exist_ok=True)
    shard = job_shard()
    if shard.rank == 0:  # before any rank writes: the settings, and no temporaries of a killed run
        _check_settings(dst, config, fmt)
        remove_stale_temporaries(dst)
    shard.barrier()
    if shard.rank != 0:
        _check_settings(dst, config, fmt)
    manifest_path = dst / "manifest.csv"
    part_path = shard.part(manifest_path)
    repair_manifest(part_path)
    done = {row["source"] for row in _rows_so_far(manifest_path, shard)}
    if shard.sharded:
        # Whole batches of the full input list, rank by rank, so that a rerun of one rank
        # finds its own batches again; only their unfinished inputs remain.
        batches = [[item for item in batch if item.key not in done]
                   for batch in shard.batches(inputs, config.batch_size)]
        batches = [batch for batch in batches if batch]
    else:
        pending = [item for item in inputs if item.key not in done]
        batches = [pending[start : start + config.batch_size] for start in range(0, len(pending), config.batch_size)]

    started = time.perf_counter()
    processed = 0
    bar = None
    if progress:
        from tqdm import tqdm

        mine = sum(len(batch) for batch in batches)
        desc = f"align (rank {shard.rank} of {shard.world})" if shard.sharded else "align"
        total = mine if shard.sharded else len(inputs)
        bar = tqdm(total=total, initial=total - mine, unit="img", desc=desc, file=sys.stderr)
    try:
        # A pipeline of three: while the detector (torch, this thread) works on batch k, a helper
        # thread decodes batch k+1 and another encodes and writes batch k-1's faces (PIL and
        # file writes release the GIL). Batch k-1's manifest rows follow only once its faces are
        # on disk, as before.
        with ManifestAppender(part_path, MANIFEST_COLUMNS, lineterminator="\r\n") as manifest, \
                ThreadPoolExecutor(max_workers=2, thread_name_prefix="align-io") as pool:
            loading = pool.submit(_load_batch, batches[0]) if batches else None
            writing: tuple[Future, list[dict[str, str]], int, int] | None = None
            for batch_index, batch in enumerate(batches):
                loaded = loading.result()
                if batch_index + 1 < len(batches):
                    loading = pool.submit(_load_batch, batches[batch_index + 1])
                rows, faces = _align_batch(batch, loaded, aligner, outputs)
                written = pool.submit(_write_faces, faces, dst, fmt, jpeg_quality)
                if writing is not None:
                    processed += _finish(writing, manifest, bar, on_batch_end)
                writing = (written, rows, len(batch), batch_index)
            if writing is not None:
                processed += _finish(writing, manifest, bar, on_batch_end)
        if shard.sharded:
            shard.barrier()  # every rank's part is complete
            if shard.rank == 0:
                order = {item.key: index for index, item in enumerate(inputs)}
                merge_parts(manifest_path, shard, MANIFEST_COLUMNS, order, key="source", lineterminator="\r\n")
            shard.barrier()  # the manifest is whole before any rank reads it
    finally:
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        run = {
            "processed": processed,
            "seconds": round(seconds, 3),
            "images_per_second": round(processed / seconds, 3) if seconds > 0 else 0.0,
        }
        if shard.sharded:
            run["rank"], run["world_size"] = shard.rank, shard.world
        summary = _summarise(_rows_so_far(manifest_path, shard), len(inputs), config, fmt, run)
        if shard.rank == 0:
            atomic_write_text(dst / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _rows_so_far(manifest: Path, shard: JobShard) -> list[dict[str, str]]:
    """The manifest's rows and, when sharded, those of every rank's part not yet merged."""
    rows = read_manifest(manifest)
    if shard.sharded:
        for part in shard.parts(manifest):
            rows += read_manifest(part)
    return rows


def _finish(writing, manifest: ManifestAppender, bar, on_batch_end) -> int:
    """Wait for a batch's faces to be on disk, then append its manifest rows."""
    written, rows, count, batch_index = writing
    written.result()  # re-raises a failed write (a full disk, say) here
    manifest.write(rows)  # only now that every image of the batch is in place
    if bar is not None:
        bar.update(count)
    if on_batch_end is not None:
        on_batch_end(batch_index)
    return count


def _load_batch(batch: Sequence[AlignInput]) -> list[tuple[np.ndarray, tuple, tuple] | ImageLoadError]:
    """Each input decoded (with its file frame), or the error that says why it could not be."""
    loaded: list[tuple[np.ndarray, tuple, tuple] | ImageLoadError] = []
    for item in batch:
        try:
            image = load_rgb(item.path)
        except ImageLoadError as exc:
            loaded.append(exc)
            continue
        size, scale = _file_frame(item.path, image)
        loaded.append((image, size, scale))
    return loaded


def _write_faces(faces: list[tuple[str, np.ndarray]], dst: Path, fmt: str, jpeg_quality: int) -> None:
    atomic_write_files([(dst / output, _encode(face, fmt, jpeg_quality)) for output, face in faces])


def _align_batch(
    batch: Sequence[AlignInput], loaded: list, aligner: FaceAligner, outputs: dict[str, str]
) -> tuple[list[dict[str, str]], list[tuple[str, np.ndarray]]]:
    """Align the decoded images of a batch: its manifest rows, and the faces to write."""
    rows: list[dict[str, str] | None] = [None] * len(batch)
    images, landmarks, where, scales, sizes = [], [], [], [], []
    for i, (item, entry) in enumerate(zip(batch, loaded)):
        if isinstance(entry, ImageLoadError):
            rows[i] = _row(item.key, "", "unreadable", entry.reason, entry.detail or str(entry))
            continue
        image, size, scale = entry
        given = item.landmarks
        if given is not None and scale != (1.0, 1.0):
            given = (given + 0.5) / np.asarray(scale) - 0.5  # dataset landmarks are in the file's frame
        images.append(image)
        landmarks.append(given)
        where.append(i)
        scales.append(scale)
        sizes.append(size)
    results = _align_guarded(aligner, images, landmarks)
    faces: list[tuple[str, np.ndarray]] = []
    for i, result, scale, size in zip(where, results, scales, sizes):
        item = batch[i]
        if isinstance(result, Exception):
            rows[i] = _row(item.key, "", "unreadable", "align_error", f"{type(result).__name__}: {result}")
            continue
        _rescale_result(result, scale)
        output = ""
        if result.face is not None:
            output = outputs[item.key]
            faces.append((output, result.face))
        detail = result.reason
        if scale != (1.0, 1.0):
            detail = "; ".join(d for d in (detail, f"decoded at 1/{scale[0]:.3f} size") if d)
        rows[i] = _row(
            item.key,
            output,
            result.status,
            _reason_code(result),
            detail,
            score="" if result.score is None else f"{result.score:.5f}",
            size=f"{size[0]} {size[1]}",
            box=_fmt(result.box),
            landmarks=_fmt(result.landmarks),
            transform=_fmt_matrix(result.transform),
            fit_rms="" if result.fit_rms is None else f"{result.fit_rms:.3f}",
        )
    return rows, faces  # type: ignore[return-value]


def _align_guarded(
    aligner: FaceAligner, images: list[np.ndarray], landmarks: list[np.ndarray | None]
) -> list[AlignResult | Exception]:
    """align_batch, and when it fails, one image at a time so that only the culprit is lost."""
    if not images:
        return []
    try:
        return list(aligner.align_batch(images, landmarks))
    except Exception as exc:  # noqa: BLE001 - any failure of one image must not stop a long run
        if len(images) == 1:
            return [exc]
    results: list[AlignResult | Exception] = []
    for image, points in zip(images, landmarks):
        try:
            results.append(aligner.align_batch([image], [points])[0])
        except Exception as exc:  # noqa: BLE001
            results.append(exc)
    return results


def _reason_code(result: AlignResult) -> str:
    """A short machine-readable reason; the sentence goes to the `detail` column."""
    text = result.reason
    if result.status == "aligned":
        return "landmarks_given" if text.startswith("landmarks given") else "detected"
    if text.startswith("best face score"):
        return "low_score"
    if text.startswith("every face is smaller"):
        return "face_too_small"
    if text.startswith("image too small") or "too small for face detection" in text:
        return "image_too_small"
    if "landmarks" in text:
        return "bad_landmarks"
    return "no_face_detected"


def _row(source: str, output: str, status: str, reason: str, detail: str, **extra: str) -> dict[str, str]:
    row = {column: "" for column in MANIFEST_COLUMNS}
    row.update(source=source, output=output, status=status, reason=reason, detail=detail, **extra)
    return row
