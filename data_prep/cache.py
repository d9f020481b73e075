"""The aligned-face cache: align once, then train from memory-mapped uint8 shards.

Decoding JPEGs and aligning faces costs far more than a small model's training step, so
`build_cache` does both once and stores the faces as raw uint8 arrays that every epoch reads
with a memory map. Folder layout:

- ``images-00000.u8``, ``images-00001.u8``, ...: raw (N_k, S, S, 3) uint8 RGB, C order;
- ``labels.npz``: ``targets`` (N, T) float64 (served as float32 tensors) and ``mask`` (N, T)
  bool, the `data_prep.datasets.base.encode_labels` convention, in the schema's task order;
- ``index.json``: version, size, schema, build settings, the source fingerprint, the shard
  boundaries, per-sample source path / identity / split / alignment status, and the samples
  that were left out with the reason (unreadable image, no face). Written last: a folder
  without it is an unfinished build;
- ``progress.json`` while building: the shards already written. Each shard covers a fixed
  range of source records and is written atomically before it is recorded, so an interrupted
  build resumes at the first unrecorded shard.

The fingerprint covers the source records (paths, labels, identities, splits, and landmarks
when aligning), the schema, the size and the aligner settings, with the template as its
geometry (size and points) rather than its name or file path: a cache built from anything else
is stale, and `build_cache` rebuilds it (or refuses, with ``on_stale="error"``).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from torch.utils.data import Dataset

from data_prep.align.templates import Template, get_template
from data_prep.datasets.base import FaceDataset
from data_prep.datasets.record import SPLITS, SampleRecord, SkippedSample
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from data_prep.folder_job import JobShard
from data_prep.images import ImageLoadError, load_rgb
from engine.checkpoint import atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from engine.errors import FaceganError
from engine.faults import fault_point

__all__ = [
    "AlignedFaceCache",
    "BatchAligner",
    "CacheError",
    "IDENTITY_TASK",
    "StaleCacheError",
    "build_cache",
    "source_fingerprint",
    "resize_square",
    "cache_dataset",
]

log = logging.getLogger(__name__)

CACHE_VERSION = 1
IDENTITY_TASK = "Identity"  # the task `with_identity_task` adds
CACHE_FORMAT = "facegan.aligned_face_cache"
INDEX_FILE = "index.json"
LABELS_FILE = "labels.npz"
PROGRESS_FILE = "progress.json"
_SHARD_NAME = "images-{:05d}.u8"
_SHARD_BYTES = 64 * 2**20  # default shard: about 64 MiB of faces
_CHUNK = 64  # images decoded and aligned at a time, which bounds memory for large sources


class CacheError(FaceganError, RuntimeError):
    """A cache folder is missing, unfinished, corrupt, or cannot be built as asked."""


class StaleCacheError(CacheError):
    """The cache was built from a different source or with different settings."""


class BatchAligner(Protocol):
    """What `build_cache` needs from an aligner (`data_prep.align.aligner.FaceAligner` fits):
    results with `.status` ("aligned", "no_face", "center_crop"), `.face` (SxSx3 uint8 or
    None) and `.reason`."""

    def align_batch(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None) -> list:
        ...


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------

def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then an antialiased (PIL bicubic) resize to size x size."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side]
    if side == size:
        return np.array(square, dtype=np.uint8)  # a writable copy, like the resized branch
    return np.array(Image.fromarray(np.ascontiguousarray(square)).resize((size, size), Image.BICUBIC), dtype=np.uint8)


def _describe_aligner(aligner: BatchAligner | None) -> dict[str, Any] | None:
    """The aligner settings that change its output (device and batch size do not)."""
    if aligner is None:
        return None
    description: dict[str, Any] = {"class": f"{type(aligner).__module__}.{type(aligner).__qualname__}"}
    config = getattr(aligner, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        settings = dict(config.to_dict())
        for volatile in ("device", "batch_size"):
            settings.pop(volatile, None)
        if "template" in settings:
            settings["template"] = _template_geometry(config.template)
        description["config"] = settings
    return description


def _template_geometry(template: str | Template) -> dict[str, list]:
    """What a template does to the faces, its size and points, without its name or file path:
    a template file edited in place then rebuilds the cache, and one geometry reached by two
    names (a built-in and a file of the same points) shares one cache."""
    resolved = get_template(template)
    return {"size": [round(float(v), 4) for v in resolved.size], "points": np.round(resolved.points, 4).tolist()}


def _landmarks_of(record: SampleRecord) -> np.ndarray | None:
    points = record.meta.get("landmarks") if record.meta else None
    if points is None:
        return None
    try:
        return np.asarray(points, dtype=np.float32).reshape(5, 2)
    except (TypeError, ValueError):
        raise CacheError(f"{record.path}: meta['landmarks'] must be 5 (x, y) points, got {points!r}") from None


def source_fingerprint(dataset: FaceDataset, size: int, aligner: BatchAligner | None = None, splits: bool = True) -> str:
    """A short hash of everything the cache content depends on: the records (paths, labels,
    identities, splits; landmarks when aligning), the schema, the size and the aligner settings.
    With `splits=False`, everything but the splits: two datasets that differ only in how their
    people are split have the same aligned faces. Image bytes are not read: replacing an image
    file in place is not detected."""
    digest = hashlib.sha256()
    head = {"version": CACHE_VERSION, "size": int(size), "schema": dataset.schema.to_dict(),
            "aligner": _describe_aligner(aligner)}
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    for record in dataset.records:
        row = [str(record.path), record.identity, record.split if splits else None,
               sorted((k, float(v)) for k, v in record.labels.items())]
        if aligner is not None:
            points = _landmarks_of(record)
            row.append(None if points is None else np.round(points, 3).tolist())
        digest.update(json.dumps(row, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def _our_files(out_dir: Path) -> list[Path]:
    names = {INDEX_FILE, LABELS_FILE, PROGRESS_FILE}
    return [p for p in out_dir.iterdir()
            if p.name in names or (p.name.startswith("images-") and p.name.endswith(".u8"))
            or (p.name.startswith("progress.part") and p.name.endswith(".json"))]


def _clear(out_dir: Path) -> None:
    # The index goes first, so that a crash midway leaves an unfinished cache, never one that
    # looks complete with missing shards.
    for name in (INDEX_FILE, PROGRESS_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for path in _our_files(out_dir):
        path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def build_cache(
    dataset: FaceDataset,
    out_dir: str | Path,
    size: int,
    aligner: BatchAligner | None = None,
    shard_size: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
    on_stale: str = "rebuild",
    on_shard_done: Callable[[int, int], None] | None = None,
    shard: JobShard | None = None,
) -> "AlignedFaceCache":
    """Align (or, without an aligner, centre-crop and resize) every image of `dataset` to
    size x size and store it in `out_dir`; return the cache opened for reading.

    An up-to-date cache is reused as is; an interrupted build resumes after its last finished
    shard. A cache from another source is rebuilt (``on_stale="rebuild"``) or refused with
    `StaleCacheError` (``on_stale="error"``). Images that cannot be loaded or in which the
    aligner finds no face are left out and listed in `AlignedFaceCache.skipped`. `num_workers`
    threads decode images (PIL releases the GIL). `on_shard_done(shard, num_shards)` is called
    after each shard is recorded. With `shard` (torchrun ranks, `data_prep.folder_job.job_shard`)
    rank 0 decides alone whether to reuse, resume or start, each rank builds shards j with
    j mod N = its rank and records them in its own progress part, and rank 0 writes the index.
    """
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise CacheError(f"size must be an integer >= 8, got {size!r}")
    if on_stale not in ("rebuild", "error"):
        raise CacheError(f"on_stale must be 'rebuild' or 'error', got {on_stale!r}")
    records = dataset.records
    if not records:
        raise CacheError(f"dataset {dataset.name!r} has no images to cache")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CacheError(f"{out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = source_fingerprint(dataset, size, aligner)
    content = source_fingerprint(dataset, size, aligner, splits=False)
    shard = shard or JobShard()
    if shard.rank == 0:  # alone: reuse, resplit or clear, and record the build's shard size
        cache = _reuse_or_start(dataset, out_dir, size, aligner, fingerprint, content, on_stale, shard_size)
        if cache is not None and not shard.sharded:
            return cache
    shard.barrier()
    if not (out_dir / PROGRESS_FILE).is_file():  # rank 0 found the cache up to date
        return AlignedFaceCache(out_dir)
    state = _read_json(out_dir / PROGRESS_FILE)
    shard_size = int(state["shard_size"])
    num_shards = -(-len(records) // shard_size)
    done = {}
    for part in [out_dir / PROGRESS_FILE, *(shard.parts(out_dir / PROGRESS_FILE) if shard.sharded else [])]:
        for key, entry in ((_read_json(part) or {}).get("shards") or {}).items():
            if _shard_intact(out_dir, int(key), entry, size):
                done[int(key)] = entry
            elif int(key) % shard.world == shard.rank:
                log.warning("%s: shard %s is missing or cut short; it is built again", out_dir, key)
    # Shard j is rank j mod N's; each rank records its own in its own progress part.
    mine = {key: entry for key, entry in done.items() if key % shard.world == shard.rank}
    part_state = {**state, "shards": {str(k): v for k, v in mine.items()}}
    part_path = shard.part(out_dir / PROGRESS_FILE)
    todo = [j for j in range(num_shards) if j % shard.world == shard.rank and j not in done]
    total = sum(min(shard_size, len(records) - j * shard_size) for j in range(num_shards) if j % shard.world == shard.rank)
    finished = sum(min(shard_size, len(records) - k * shard_size) for k in mine)
    desc = f"caching {dataset.name}" + (f" (rank {shard.rank} of {shard.world})" if shard.sharded else "")
    bar = tqdm(total=total, initial=finished, desc=desc, unit="img", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=num_workers) if num_workers > 0 else None
    try:
        for index in todo:
            start, stop = index * shard_size, min(len(records), (index + 1) * shard_size)
            entry = _build_shard(records, start, stop, out_dir / _SHARD_NAME.format(index), size, aligner, pool, bar)
            fault_point("cache-shard")  # the shard is on disk, the progress file does not list it yet
            part_state["shards"][str(index)] = entry
            atomic_write_text(part_path, json.dumps(part_state))
            if on_shard_done is not None:
                on_shard_done(index, num_shards)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True)
    shard.barrier()  # every rank's shards are on disk
    if shard.rank == 0:
        for part in [out_dir / PROGRESS_FILE, *shard.parts(out_dir / PROGRESS_FILE)]:
            state["shards"].update((_read_json(part) or {}).get("shards") or {})
        _write_index(dataset, out_dir, size, aligner, fingerprint, state, num_shards, content)
        for part in [out_dir / PROGRESS_FILE, *shard.parts(out_dir / PROGRESS_FILE)]:
            part.unlink(missing_ok=True)
    shard.barrier()
    return AlignedFaceCache(out_dir)


def _reuse_or_start(dataset: FaceDataset, out_dir: Path, size: int, aligner: BatchAligner | None, fingerprint: str,
                    content: str, on_stale: str, shard_size: int | None) -> "AlignedFaceCache | None":
    """The cache when it is up to date (resplit if only the splits changed); else the build's
    state in progress.json, new or the one an interrupted build left."""
    index = _read_json(out_dir / INDEX_FILE)
    if index is not None and index.get("version") == CACHE_VERSION:
        same = index.get("fingerprint") == fingerprint
        if not same and index.get("content_fingerprint") == content:
            # The same faces split another way: rewrite the split column, align nothing again.
            _resplit_index(out_dir, index, dataset, fingerprint)
            same = True
        if same:
            try:
                cache = AlignedFaceCache(out_dir)
            except CacheError as exc:
                log.warning("%s; building it again", exc)
                _clear(out_dir)
            else:
                if index.get("content_fingerprint") != content:  # an index written before it was recorded
                    index["content_fingerprint"] = content
                    atomic_write_text(out_dir / INDEX_FILE, json.dumps(index))
                log.info("cache %s is up to date (fingerprint %s); reusing it", out_dir, fingerprint)
                (out_dir / PROGRESS_FILE).unlink(missing_ok=True)
                return cache
            index = None
    if index is not None:
        message = (f"the cache in {out_dir} was built from a different source or with other settings "
                   f"(fingerprint {index.get('fingerprint')} from dataset {index.get('dataset')!r}, size "
                   f"{index.get('size')}; now {fingerprint} from {dataset.name!r}, size {size})")
        if on_stale == "error":
            raise StaleCacheError(
                message + "; rebuild it (on_stale='rebuild', --on-stale rebuild) or use another folder")
        log.warning("%s; rebuilding it", message)
        _clear(out_dir)

    state = _read_json(out_dir / PROGRESS_FILE)
    if state is not None and (state.get("fingerprint") != fingerprint or state.get("version") != CACHE_VERSION):
        log.warning("discarding the unfinished cache build in %s: it was for another source or settings", out_dir)
        _clear(out_dir)
        state = None
    if state is None:
        _clear(out_dir)
        shard_size = int(shard_size or max(256, min(8192, _SHARD_BYTES // (size * size * 3))))
        if shard_size < 1:
            raise CacheError(f"shard_size must be >= 1, got {shard_size}")
        state = {"version": CACHE_VERSION, "fingerprint": fingerprint, "shard_size": shard_size, "shards": {}}
        atomic_write_text(out_dir / PROGRESS_FILE, json.dumps(state))
    else:
        # Shard boundaries of a started build are fixed: resuming keeps them.
        log.info("resuming the cache build in %s (%d shard(s) done)", out_dir, len(state["shards"]))
    remove_stale_temporaries(out_dir, recursive=False)
    return None


def _shard_intact(out_dir: Path, shard: int, entry: dict, size: int) -> bool:
    path = out_dir / _SHARD_NAME.format(shard)
    return path.is_file() and path.stat().st_size == len(entry["rows"]) * size * size * 3


def _load_one(record: SampleRecord, size: int, resize: bool) -> tuple[np.ndarray | None, str]:
    try:
        image = load_rgb(record.path)
    except ImageLoadError as exc:
        return None, f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason
    return (resize_square(image, size) if resize else image), ""


def _build_shard(
    records: Sequence[SampleRecord],
    start: int,
    stop: int,
    path: Path,
    size: int,
    aligner: BatchAligner | None,
    pool: ThreadPoolExecutor | None,
    bar,
) -> dict:
    buffer = np.empty((stop - start, size, size, 3), dtype=np.uint8)
    rows: list[int] = []
    statuses: list[str] = []
    skipped: list[list] = []
    for chunk_start in range(start, stop, _CHUNK):
        chunk = range(chunk_start, min(stop, chunk_start + _CHUNK))
        load = lambda i: _load_one(records[i], size, resize=aligner is None)  # noqa: E731
        loaded = list(pool.map(load, chunk)) if pool is not None else [load(i) for i in chunk]
        ok = [i for i, (image, _) in zip(chunk, loaded) if image is not None]
        skipped.extend([i, str(records[i].path), why] for i, (image, why) in zip(chunk, loaded) if image is None)
        images = [image for image, _ in loaded if image is not None]
        if aligner is None:
            results = [(image, "resized") for image in images]
        else:
            results = _align(aligner, images, [_landmarks_of(records[i]) for i in ok], size)
        for i, (face, status) in zip(ok, results):
            if face is None:
                skipped.append([i, str(records[i].path), status])
                continue
            buffer[len(rows)] = face
            rows.append(i)
            statuses.append(status)
        bar.update(len(chunk))
    atomic_write_bytes(path, buffer[:len(rows)].tobytes())
    return {"rows": rows, "status": statuses, "skipped": skipped}


def _align(aligner: BatchAligner, images: list[np.ndarray], landmarks: list[np.ndarray | None],
           size: int) -> list[tuple[np.ndarray | None, str]]:
    if not images:
        return []
    given = landmarks if any(points is not None for points in landmarks) else None
    results = aligner.align_batch(images, given)
    if len(results) != len(images):
        raise CacheError(f"the aligner returned {len(results)} results for {len(images)} images")
    out: list[tuple[np.ndarray | None, str]] = []
    for result in results:
        if result.status == "no_face" or result.face is None:
            out.append((None, f"no_face: {result.reason}" if result.reason else "no_face"))
            continue
        face = np.asarray(result.face)
        if face.shape != (size, size, 3) or face.dtype != np.uint8:
            raise CacheError(
                f"the aligner produced {face.shape} {face.dtype} faces but the cache stores {size}x{size}x3 uint8; "
                f"configure the aligner with output_size={size}")
        out.append((face, str(result.status)))
    return out


def _resplit_index(out_dir: Path, index: dict, dataset: FaceDataset, fingerprint: str) -> None:
    """Give a finished cache the splits of `dataset`, whose faces it already holds."""
    records = dataset.records
    samples = index["samples"]
    samples["split"] = [records[i].split for i in samples["source_index"]]
    index["fingerprint"] = fingerprint
    atomic_write_text(out_dir / INDEX_FILE, json.dumps(index))
    counts: dict[str, int] = {}
    for split in samples["split"]:
        counts[str(split)] = counts.get(str(split), 0) + 1
    log.info("cache %s: same faces, new splits %s; re-split without aligning again", out_dir, counts)


def _write_index(dataset: FaceDataset, out_dir: Path, size: int, aligner: BatchAligner | None,
                 fingerprint: str, state: dict, num_shards: int, content_fingerprint: str = "") -> None:
    records = dataset.records
    schema = dataset.schema
    rows: list[int] = []
    statuses: list[str] = []
    skipped: list[dict] = []
    shards: list[dict] = []
    for shard in range(num_shards):
        entry = state["shards"][str(shard)]
        shards.append({"file": _SHARD_NAME.format(shard), "start": len(rows), "count": len(entry["rows"])})
        rows.extend(entry["rows"])
        statuses.extend(entry["status"])
        skipped.extend({"source": path, "index": i, "reason": why} for i, path, why in entry["skipped"])
    # float64 on disk keeps regression labels exact (records read back 48.9, not 48.900001).
    targets = np.zeros((len(rows), len(schema)), dtype=np.float64)
    mask = np.zeros((len(rows), len(schema)), dtype=bool)
    for j, task in enumerate(schema):
        for n, i in enumerate(rows):
            value = records[i].labels.get(task.name)
            if value is not None:
                targets[n, j] = float(value)
                mask[n, j] = True
    buffer = io.BytesIO()
    np.savez(buffer, targets=targets, mask=mask)
    atomic_write_bytes(out_dir / LABELS_FILE, buffer.getvalue())
    index = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "dataset": dataset.name,
        "source_root": str(dataset.root) if dataset.root is not None else None,
        "size": int(size),
        "count": len(rows),
        "layout": "NHWC uint8 RGB",
        "schema": schema.to_dict(),
        "fingerprint": fingerprint,
        "content_fingerprint": content_fingerprint,  # the fingerprint without splits: a re-split reuses the faces
        "build": {"aligner": _describe_aligner(aligner), "shard_size": state["shard_size"],
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "shards": shards,
        "samples": {
            "path": [str(records[i].path) for i in rows],
            "identity": [records[i].identity for i in rows],
            "split": [records[i].split for i in rows],
            "status": statuses,
            "source_index": rows,
        },
        "skipped": skipped,
    }
    atomic_write_text(out_dir / INDEX_FILE, json.dumps(index))
    log.info("cached %d faces in %s (%d shard(s)); skipped %d", len(rows), out_dir, num_shards, len(skipped))


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

class AlignedFaceCache(Dataset):
    """A finished cache as a torch Dataset.

    `cache[i]` is {"image": 3xSxS uint8 tensor (then `transform`), "targets", "mask", "index"},
    the layout of `FaceDataset.__getitem__`. `get_batch(indices)` returns a (B, 3, S, S) uint8
    tensor straight from the memory maps, the fast path for training loops. Memory maps are
    opened on first access in each process and never pickled, so DataLoader workers each map
    the shards themselves.
    """

    def __init__(self, path: str | Path, transform: Callable | None = None):
        self.path = Path(path)
        index = _read_json(self.path / INDEX_FILE)
        if index is None:
            if (self.path / PROGRESS_FILE).is_file():
                raise CacheError(f"the cache in {self.path} is unfinished (its build was interrupted); "
                                 "run the build again to resume it")
            raise CacheError(f"no aligned-face cache in {self.path}: {INDEX_FILE} is missing or unreadable")
        if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
            raise CacheError(f"{self.path / INDEX_FILE}: not a version {CACHE_VERSION} facegan cache; rebuild it")
        try:
            with np.load(self.path / LABELS_FILE) as labels:
                targets, mask = labels["targets"], labels["mask"]
        except (OSError, ValueError, KeyError) as exc:
            raise CacheError(f"{self.path / LABELS_FILE} is missing or corrupt ({exc}); rebuild the cache") from exc
        self.index = index
        self.name: str = index["dataset"]
        self.size: int = int(index["size"])
        self.schema = LabelSchema.from_dict(index["schema"])
        self.fingerprint: str = index["fingerprint"]
        self.transform = transform
        count = int(index["count"])
        if targets.shape != (count, len(self.schema)) or mask.shape != targets.shape:
            raise CacheError(
                f"{self.path}: labels of shape {targets.shape} do not match {count} samples; rebuild the cache")
        self._values = np.ascontiguousarray(targets, dtype=np.float64)
        self._targets = torch.from_numpy(self._values.astype(np.float32))
        self._mask = torch.from_numpy(np.ascontiguousarray(mask))
        shards = index["shards"]
        self._shard_files = [self.path / s["file"] for s in shards]
        self._shard_starts = np.array([s["start"] for s in shards], dtype=np.int64)
        self._shard_counts = np.array([s["count"] for s in shards], dtype=np.int64)
        frame = self.size * self.size * 3
        for file, shard_count in zip(self._shard_files, self._shard_counts):
            if not file.is_file() or file.stat().st_size != shard_count * frame:
                raise CacheError(f"{file} is missing or has the wrong size for {shard_count} faces; rebuild the cache")
        self._rows = np.arange(count, dtype=np.int64)
        self._maps: dict[int, np.memmap] = {}
        self._pid = os.getpid()
        self._records: list[SampleRecord] | None = None

    # -- the dataset protocol ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict:
        row = int(self._rows[index])
        image = torch.from_numpy(self._read_rows(np.array([row]))[0]).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "targets": self._targets[row].clone(), "mask": self._mask[row].clone(), "index": index}

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 faces for positions `indices` (no transform applied)."""
        rows = self._rows[np.asarray(indices, dtype=np.int64).reshape(-1)]
        return torch.from_numpy(self._read_rows(rows)).permute(0, 3, 1, 2).contiguous()

    def get_targets(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, mask) of positions `indices`, each (B, T)."""
        rows = torch.from_numpy(self._rows[np.asarray(indices, dtype=np.int64).reshape(-1)])
        return self._targets[rows], self._mask[rows]

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.size, self.size, 3), dtype=np.uint8)
        shard_of = np.searchsorted(self._shard_starts, rows, side="right") - 1
        for shard in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard)
            offsets = rows[where] - self._shard_starts[shard]
            order = np.argsort(offsets, kind="stable")  # ascending reads are kind to the page cache
            out[where[order]] = self._memmap(int(shard))[offsets[order]]
        return out

    def _memmap(self, shard: int) -> np.memmap:
        if self._pid != os.getpid():  # a forked worker: map the files again in this process
            self._maps, self._pid = {}, os.getpid()
        mapped = self._maps.get(shard)
        if mapped is None:
            mapped = np.memmap(self._shard_files[shard], dtype=np.uint8, mode="r",
                               shape=(int(self._shard_counts[shard]), self.size, self.size, 3))
            self._maps[shard] = mapped
        return mapped

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}
        state["_records"] = None
        return state

    # -- metadata -----------------------------------------------------------------------------
    @property
    def paths(self) -> list[str]:
        samples = self.index["samples"]["path"]
        return [samples[r] for r in self._rows]

    @property
    def targets(self) -> torch.Tensor:
        return self._targets[torch.from_numpy(self._rows)]

    @property
    def mask(self) -> torch.Tensor:
        return self._mask[torch.from_numpy(self._rows)]

    @property
    def records(self) -> list[SampleRecord]:
        """One `SampleRecord` per cached face (source path, labels, identity, split); meta has
        the cache row and the alignment status."""
        if self._records is None:
            samples = self.index["samples"]
            integer = [t.kind is not TaskKind.REGRESSION for t in self.schema]
            names = self.schema.names
            records = []
            for row in self._rows:
                values, known = self._values[row].tolist(), self._mask[row].tolist()
                labels = {name: (int(round(v)) if is_int else float(v))
                          for name, v, k, is_int in zip(names, values, known, integer) if k}
                records.append(SampleRecord(Path(samples["path"][row]), labels, samples["identity"][row],
                                            samples["split"][row],
                                            {"cache_row": int(row), "align_status": samples["status"][row]}))
            self._records = records
        return self._records

    @property
    def skipped(self) -> list[SkippedSample]:
        return [SkippedSample(item["source"], None, item["reason"]) for item in self.index["skipped"]]

    def subset(
        self, split: str | None = None, keep: Callable[[SampleRecord], bool] | None = None
    ) -> "AlignedFaceCache":
        """A view of the faces of one split and/or those whose record passes `keep` (no copy)."""
        if split is not None and split not in SPLITS:
            raise CacheError(f"unknown split {split!r}; choose from {SPLITS}")
        splits = self.index["samples"]["split"]
        chosen = [i for i, row in enumerate(self._rows) if split is None or splits[row] == split]
        if keep is not None:  # records are built only when a predicate needs them
            records = self.records
            chosen = [i for i in chosen if keep(records[i])]
        return self._view(self._rows[np.array(chosen, dtype=np.int64)])

    def _view(self, rows: np.ndarray) -> "AlignedFaceCache":
        view = object.__new__(AlignedFaceCache)
        view.__dict__.update(self.__getstate__())
        view._rows = rows
        view._maps, view._pid = {}, os.getpid()
        return view

    def with_identity_task(self, people: Sequence[str], name: str = IDENTITY_TASK) -> "AlignedFaceCache":
        """This view with one more categorical task, `name`, whose classes are `people`: a face
        of one of them is labelled with that person's index, any other face is unlabelled for it.
        Nothing is re-aligned: the identities are those the cache stored with each face.
        Trains a face-identity head; an identity-disjoint split leaves val/test people unlabelled."""
        people = list(people)
        if len(people) < 2:
            raise CacheError(f"an identity task needs at least 2 people, got {len(people)}")
        if name in self.schema:
            raise CacheError(f"the cache already has a task named {name!r}")
        position = {person: i for i, person in enumerate(people)}
        identity = self.index["samples"]["identity"]
        values = np.array([position.get(p, 0) for p in identity], dtype=np.float64)
        known = np.array([p in position for p in identity], dtype=bool)
        task = Task(name, TaskKind.CATEGORICAL, tuple(people), description="face identity (a person of the training split)")
        return self._with_task(task, values, known)

    def with_value_groups(self, source: str, edges: Sequence[float], name: str) -> "AlignedFaceCache":
        """This view with one more ordinal task, `name`: the regression task `source` (an age)
        cut at `edges` into len(edges) + 1 contiguous groups [low, e1), [e1, e2), ...,
        [e_last, high], so that every value falls in exactly one. A face without a `source`
        label has none for `name` either. Nothing is re-aligned."""
        edges = [float(e) for e in edges]
        if name in self.schema:
            raise CacheError(f"the cache already has a task named {name!r}")
        if source not in self.schema or self.schema[source].kind is not TaskKind.REGRESSION:
            have = [t.name for t in self.schema if t.kind is TaskKind.REGRESSION]
            raise CacheError(f"{self.name}: no regression task {source!r} to cut into groups (regression tasks: {have})")
        if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
            raise CacheError(f"group edges must be one or more increasing values, got {edges}")
        low, high = self.schema[source].value_range or (-np.inf, np.inf)
        if not low < edges[0] or not edges[-1] <= high:
            raise CacheError(f"group edges {edges} must lie inside {source}'s range ({low:g}, {high:g}]: "
                             "every group needs values")
        column = self.schema.names.index(source)
        values = np.searchsorted(np.asarray(edges), self._values[:, column], side="right").astype(np.float64)
        bounds = [low, *edges, high]
        task = Task(name, TaskKind.ORDINAL, tuple(_group_name(a, b, k == len(edges)) for k, (a, b) in
                                                  enumerate(zip(bounds, bounds[1:]))),
                    description=f"{source} in groups cut at {', '.join(f'{e:g}' for e in edges)}")
        return self._with_task(task, values, self._mask[:, column].numpy())

    def _with_task(self, task: Task, values: np.ndarray, known: np.ndarray) -> "AlignedFaceCache":
        """This view with `task` appended: `values` and `known` hold its label of every face of the cache."""
        view = self._view(self._rows)
        view.schema = LabelSchema(self.schema.tasks + (task,))
        view._values = np.concatenate([self._values, values[:, None]], 1)
        view._targets = torch.from_numpy(view._values.astype(np.float32))
        view._mask = torch.cat([self._mask, torch.from_numpy(np.asarray(known, dtype=bool))[:, None]], 1)
        view._records = None
        return view

    def split_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        splits = self.index["samples"]["split"]
        for row in self._rows:
            counts[str(splits[row])] = counts.get(str(splits[row]), 0) + 1
        return counts

    def identities(self) -> set[str]:
        identity = self.index["samples"]["identity"]
        return {identity[r] for r in self._rows if identity[r] is not None}

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.split_counts().items()))
        return (f"cache {self.path} ({self.name}): {len(self)} faces at {self.size}x{self.size}, "
                f"{len(self.schema)} tasks, splits [{counts}], skipped {len(self.index['skipped'])}")

    def __repr__(self) -> str:
        return f"AlignedFaceCache({self.summary()})"


def _group_name(low: float, high: float, last: bool) -> str:
    """"13-24" for [13, 25) of whole numbers (ages in years), "60+" for the last group; "[1.5, 2)"
    otherwise."""
    if last:
        return f"{low:g}+"
    if np.isfinite(low) and float(low).is_integer() and float(high).is_integer():
        return f"{low:g}-{high - 1:g}"
    return f"[{low:g}, {high:g})"


def cache_dataset(name: str, root: str | Path, out: str | Path, size: int = 64, align: bool = True,
                  template: str = "thesis", split: str | None = None, shard_size: int | None = None, workers: int = 2,
                  device: str = "auto", progress: bool = True, on_stale: str = "rebuild",
                  face_fraction: float = 0.0) -> "AlignedFaceCache":
    """Read dataset `name` at `root` (only `split` when given), align every face (or only
    centre-crop and resize with `align=False`) and cache it in `out` (`facegan data cache`).
    Under torchrun the processes share the work (see `build_cache`)."""
    from data_prep.folder_job import job_shard

    from data_prep.datasets.registry import load_dataset

    dataset = load_dataset(name, root)
    if split is not None:
        dataset = dataset.subset(split)
    aligner = None
    if align:
        from data_prep.align.aligner import AlignConfig, FaceAligner

        aligner = FaceAligner(AlignConfig(output_size=size, template=template, device=device,
                                          face_fraction=face_fraction))
    return build_cache(dataset, out, size, aligner=aligner, shard_size=shard_size, num_workers=workers,
                       progress=progress, on_stale=on_stale, shard=job_shard())
