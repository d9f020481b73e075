"""Checkpoint files: atomic writes, safe loads, and config fingerprints for resume checks."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from engine.errors import FaceganError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save",
    "load_checkpoint",
    "config_fingerprint",
    "module_weights",
    "file_sha256",
    "CheckpointError",
]


class CheckpointError(FaceganError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not match what the caller expects."""


def _atomic_replace(path: Path, write) -> None:
    # Write beside the target and rename: a crash mid-write leaves the old file intact,
    # never a truncated one, because rename within a directory is atomic on POSIX.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic_replace(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save that never leaves a half-written file behind."""
    _atomic_replace(Path(path), lambda handle: torch.save(obj, handle))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True, so a checkpoint cannot execute code when it is opened."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise CheckpointError(f"cannot load checkpoint {path}: {type(exc).__name__}: {exc}") from exc


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
