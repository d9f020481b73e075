"""Checkpoint files: atomic writes, safe loads, and config fingerprints for resume checks."""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from engine.errors import DiskFullError, FaceganError
from engine.faults import fault_point

__all__ = [
    "atomic_write_bytes",
    "atomic_write_files",
    "atomic_write_text",
    "atomic_save",
    "load_checkpoint",
    "newest_intact",
    "config_fingerprint",
    "module_weights",
    "file_sha256",
    "remove_stale_temporaries",
    "training_state_differences",
    "CheckpointError",
]


log = logging.getLogger(__name__)


class CheckpointError(FaceganError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not match what the caller expects."""


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import (single-threaded): the permissions a plain open() would give a new file.
_NEW_FILE_MODE = 0o666 & ~_read_umask()


def _write_temporary(path: Path, write, durable: bool = True) -> str:
    """A temporary file beside `path` holding what `write(handle)` writes; with `durable`, on
    disk (fsynced) before this returns. The caller renames it into place or removes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp makes the file private (0600); the result gets what a plain write would:
            # the replaced file's permissions, else the umask's.
            os.fchmod(handle.fileno(), path.stat().st_mode & 0o7777 if path.exists() else _NEW_FILE_MODE)
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
    except BaseException:
        _remove(tmp_name)
        raise
    return tmp_name


def _remove(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def _disk_full(exc: BaseException, path: Path) -> DiskFullError | None:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on the device while writing {path}; the previous version of it is "
                             "intact (nothing was replaced). Free some space and run the command again: it resumes.")
    return None


def _atomic_replace(path: Path, write, keep_previous: Path | None = None, fault: str | None = None) -> None:
    # Write beside the target and rename: a crash mid-write leaves the old file intact, never a
    # truncated one, because rename within a directory is atomic on POSIX. With `keep_previous`,
    # the old file becomes that one first, so a file damaged later (a disk, a copy, a sync tool)
    # still has an intact predecessor.
    path = Path(path)
    tmp_name = None
    try:
        tmp_name = _write_temporary(path, write)
        if fault:
            fault_point(f"{fault}-rename")
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
            if fault:
                fault_point(f"{fault}-rotate")
        os.replace(tmp_name, path)
        tmp_name = None
        _sync_folder(path.parent)
    except BaseException as exc:
        if tmp_name is not None:
            _remove(tmp_name)
        full = _disk_full(exc, path)
        if full is not None:
            raise full from exc
        raise


def atomic_write_files(files: Sequence[tuple[str | os.PathLike, bytes]]) -> None:
    """Write many small files with `atomic_write_bytes`' guarantee at a fraction of its cost:
    every file goes to a temporary beside its target, one `os.sync()` puts them all on disk
    (where one fsync per file, plus one per rename, cost 0.6-2.5 ms per 30 KB face here against
    0.3 ms), and only then is each renamed into place. So no target is ever renamed into place
    before its bytes are durable. On failure the temporaries not yet renamed are removed; files
    already renamed are complete."""
    if not hasattr(os, "sync"):  # Windows: one fsync per file
        for path, data in files:
            atomic_write_bytes(path, data)
        return
    pending: list[tuple[str, Path]] = []
    current = None
    try:
        for path, data in files:
            current = Path(path)
            pending.append((_write_temporary(current, lambda handle, data=data: handle.write(data), durable=False),
                            current))
        os.sync()
        for tmp_name, current in pending:
            os.replace(tmp_name, current)
        for folder in {Path(path).parent for path, _ in files}:
            _sync_folder(folder)
    except BaseException as exc:
        for tmp_name, _ in pending:
            _remove(tmp_name)  # those renamed already are gone
        full = _disk_full(exc, current) if current is not None else None
        if full is not None:
            raise full from exc
        raise


# The temporary file of an atomic write: ".<name>.<8 random characters>.tmp" beside its target.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Remove the temporary files of atomic writes that a killed process left in `folder`, say
    so, and return how many there were. Only call it where no other process is writing."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = [p for p in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"))
             if p.is_file() and _TEMPORARY.match(p.name)]
    for path in found:
        path.unlink(missing_ok=True)
    if found:
        log.warning("removed %d temporary file(s) that an interrupted run left in %s", len(found), folder)
    return len(found)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a power cut (where the OS supports it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic_replace(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_save(obj: Any, path: str | os.PathLike, keep_previous: str | os.PathLike | None = None) -> None:
    """torch.save that never leaves a half-written file behind; with `keep_previous`, the file
    it replaces is kept there (a rotation: latest.pt -> previous.pt)."""
    _atomic_replace(Path(path), lambda handle: torch.save(obj, handle),
                    Path(keep_previous) if keep_previous is not None else None, fault="checkpoint")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True, so a checkpoint cannot execute code when it is opened: a file
    that holds other Python objects (a pickled function, say) is refused with a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was cut short, by a full disk or a copy")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"cannot load checkpoint {path}: {exc}; it is damaged (cut short, or not a "
                                  "checkpoint)") from exc
        raise CheckpointError(
            f"cannot load checkpoint {path}: it holds Python objects other than tensors and plain data, which could "
            "run code when opened; facegan never writes such files, so it is refused") from None
    except Exception as exc:  # torch raises several unrelated types for a bad file
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"cannot load checkpoint {path}: {type(exc).__name__}: {detail[:160]}; it is damaged "
                              "(cut short, or not a checkpoint)") from exc


def newest_intact(paths: list[Path], map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any], list[str]]:
    """The first of `paths` that loads, its contents, and why each one before it did not
    (a CheckpointError naming every file when none loads)."""
    problems = []
    for path in paths:
        if not path.is_file():
            continue
        try:
            return path, load_checkpoint(path, map_location), problems
        except CheckpointError as exc:
            problems.append(str(exc))
    if not problems:
        raise CheckpointError(f"no checkpoint at {' or '.join(map(str, paths))}")
    raise CheckpointError("no intact checkpoint: " + "; ".join(problems))


def config_fingerprint(config: Any) -> str:
    """A short stable hash of a JSON-able config (dicts are key-sorted)."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def module_weights(state: dict[str, Any], name: str, use_ema: bool = True, where: str | os.PathLike = "checkpoint"
                   ) -> tuple[dict[str, Any], bool]:
    """The state_dict of module `name` in a Trainer checkpoint: its EMA copy when `use_ema` and
    the run kept one, else the trained weights. Returns the weights and whether they are the
    EMA copy."""
    if use_ema:
        ema = (state.get("ema") or {}).get(name)
        if ema is not None:
            return ema, True
    weights = (state.get("modules") or {}).get(name)
    if weights is None:
        raise CheckpointError(f"{where} holds no weights of a module {name!r}")
    return weights, False


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks (weights files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The parts of a checkpoint that decide how training goes on: equal between two runs means the
# second continues exactly as the first would.
TRAINING_STATE = ("modules", "ema", "optimizers", "schedulers", "scaler")


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _leaves(value, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, value in enumerate(tree) for k, v in _leaves(value, f"{prefix}/{i}").items()}
    return {prefix: tree}


def training_state_differences(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, list[str]]:
    """Compare two loaded checkpoints bit for bit: the step and every tensor and number of the
    weights, EMA weights, optimiser, scheduler and scaler states. Returns (values compared, one
    line per difference); crash tests use it to show that a resumed run equals an uninterrupted one."""
    differences = []
    if a.get("global_step") != b.get("global_step"):
        differences.append(f"global_step {b.get('global_step')} != {a.get('global_step')}")
    compared = 0
    for section in TRAINING_STATE:
        leaves_a, leaves_b = _leaves(a.get(section, {})), _leaves(b.get(section, {}))
        if leaves_a.keys() != leaves_b.keys():
            differences.append(f"{section}: entries differ ({sorted(leaves_a.keys() ^ leaves_b.keys())[:3]})")
            continue
        for key, x in leaves_a.items():
            y = leaves_b[key]
            compared += 1
            if torch.is_tensor(x) or torch.is_tensor(y):
                same = torch.is_tensor(x) and torch.is_tensor(y) and x.dtype == y.dtype and torch.equal(x, y)
            else:
                same = x == y or (x != x and y != y)  # NaN equals NaN here
            if not same:
                differences.append(f"{section}{key} differs")
    return compared, differences
