"""Features of a fixed set of images, kept on disk so that they are extracted once.

Extracting features is most of what a Fréchet distance costs on a CPU: dlib's face embedding
takes ~0.085 s a face on 2 cores, the FID Inception a few hundredths. The reference side rarely
changes (the real faces `facegan gan eval` scores every checkpoint against; the face sets of a
study's domain-gap table, measured again at every rerun), so `cached_features` keeps each
set's (N, D) float64 features in a folder, under a hash of everything they depend on: the
images' pixels, the extractor's protocol (its weights included), the batching, and the torch and
dlib versions. Other pixels or another extractor miss the cache; a damaged file is extracted
again and replaced, never trusted.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from engine.checkpoint import atomic_write_bytes

__all__ = ["cached_features"]

log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    try:
        import dlib

        versions["dlib"] = dlib.__version__
    except ImportError:
        pass
    return versions


def _key(batches: Sequence, depends: dict[str, Any]) -> tuple[str, int]:
    digest = hashlib.sha256(json.dumps({**depends, **_versions()}, sort_keys=True, default=str).encode())
    rows = 0
    for batch in batches:
        array = np.ascontiguousarray(batch.detach().cpu().numpy() if torch.is_tensor(batch) else np.asarray(batch))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
        rows += len(array)
    return digest.hexdigest()[:32], rows


def cached_features(batches: Sequence, depends: dict[str, Any], extract: Callable[[], np.ndarray],
                    cache_dir: str | Path | None, max_rows: int | None = None) -> np.ndarray:
    """`extract()`'s (N, D) float64 features of the images in `batches` (tensors or arrays), read
    from `cache_dir` when the same images met the same `depends` (the extractor's protocol and any
    setting the features follow) before; `cache_dir` None extracts every time. `max_rows`: at most
    this many rows are expected (an extraction capped at that many images)."""
    if cache_dir is None:
        return np.asarray(extract(), dtype=np.float64)
    key, rows = _key(batches, depends)
    rows = rows if max_rows is None else min(rows, max_rows)
    path = Path(cache_dir) / f"{key}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.ndim == 2 and cached.shape[0] == rows and cached.dtype == np.float64:
                return cached
            log.warning("%s holds an array of shape %s and type %s, not %d rows of float64: extracting again", path,
                        cached.shape, cached.dtype, rows)
        except (OSError, ValueError) as exc:
            log.warning("%s cannot be read (%s): extracting again", path, exc)
    features = np.asarray(extract(), dtype=np.float64)
    buffer = io.BytesIO()
    np.save(buffer, features, allow_pickle=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:  # a full disk, say: the features are right, the next run extracts them again
        log.warning("could not keep the features in %s (%s)", path, exc)
    return features
