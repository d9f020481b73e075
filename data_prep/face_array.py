"""Aligned faces held in memory, with the interface of an `AlignedFaceCache` view.

A study that transforms whole training sets (super-resolves them, converts them to grayscale,
mixes two of them 1:1) needs faces that are not rows of an on-disk cache. `FaceArray` holds
(N, S, S, 3) uint8 faces with their targets, mask, identities and source paths, and offers
what trainers and evaluators read from a cache: `len`, `[i]`, `get_batch`, `targets`, `mask`,
`schema`, `size`. It saves to and loads from one `.npz` file, so a transformed set can be a
cached stage of a longer pipeline.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data_prep.datasets.schema import LabelSchema
from engine.checkpoint import atomic_write_bytes
from engine.errors import FaceganError

__all__ = ["FaceArray", "FaceArrayError", "FaceTensor"]


class FaceArrayError(FaceganError, ValueError):
    """Faces and labels that do not fit together, or an unreadable saved array."""


class FaceTensor(Dataset):
    """Unlabelled faces already in one (N, 3, S, S) tensor, as the items a GAN or SR step trains
    on ({"image": (3, S, S)}): for benchmarks and checks that time training without a cache."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index]}


class FaceArray(Dataset):
    def __init__(self, images: np.ndarray, targets: torch.Tensor, mask: torch.Tensor, schema: LabelSchema,
                 identities: Sequence[str | None] | None = None, paths: Sequence[str] | None = None, name: str = ""):
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
            raise FaceArrayError(f"faces must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
        n = images.shape[0]
        targets = torch.as_tensor(targets, dtype=torch.float32)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if targets.shape != (n, len(schema)) or mask.shape != targets.shape:
            raise FaceArrayError(f"{n} faces need targets and mask of shape ({n}, {len(schema)}); "
                                 f"got {tuple(targets.shape)} and {tuple(mask.shape)}")
        self.images = images
        self._targets = targets
        self._mask = mask
        self.schema = schema
        self.identity = list(identities) if identities is not None else [None] * n
        self._paths = list(paths) if paths is not None else [""] * n
        if len(self.identity) != n or len(self._paths) != n:
            raise FaceArrayError(f"{n} faces but {len(self.identity)} identities and {len(self._paths)} paths")
        self.name = name

    # -- what trainers read -----------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1)
        return {"image": image, "targets": self._targets[index].clone(), "mask": self._mask[index].clone(), "index": index}

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 faces at positions `indices`."""
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        return torch.from_numpy(self.images[rows]).permute(0, 3, 1, 2).contiguous()

    @property
    def targets(self) -> torch.Tensor:
        return self._targets

    @property
    def mask(self) -> torch.Tensor:
        return self._mask

    @property
    def paths(self) -> list[str]:
        return list(self._paths)

    def identities(self) -> set[str]:
        return {i for i in self.identity if i is not None}

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_cache(cls, cache, tasks: Sequence[str] | None = None, name: str = "") -> "FaceArray":
        """Read a cache view into memory, keeping the columns of `tasks` (all when None) and
        only the faces with at least one of them labelled."""
        schema = cache.schema
        names = list(tasks) if tasks else schema.names
        missing = [t for t in names if t not in schema]
        if missing:
            raise FaceArrayError(f"{cache.name}: no task(s) {missing} in its schema; it has {schema.names}")
        columns = [schema.names.index(t) for t in names]
        targets, mask = cache.targets[:, columns], cache.mask[:, columns]
        keep = np.flatnonzero(mask.any(dim=1).numpy())
        images = cache.get_batch(keep).permute(0, 2, 3, 1).numpy() if len(keep) else np.zeros((0, cache.size, cache.size, 3), np.uint8)
        records = cache.records
        identities = [records[i].identity for i in keep]
        paths = [str(records[i].path) for i in keep]
        sub_schema = LabelSchema(tuple(schema[t] for t in names))
        return cls(images, targets[keep], mask[keep], sub_schema, identities, paths, name or cache.name)

    def with_images(self, images: np.ndarray, name: str | None = None) -> "FaceArray":
        """The same faces' labels and identities with new pixels (one new face per old one)."""
        if len(images) != len(self):
            raise FaceArrayError(f"{len(images)} new faces for {len(self)} labelled ones")
        return FaceArray(images, self._targets.clone(), self._mask.clone(), self.schema, self.identity, self._paths,
                         self.name if name is None else name)

    def map_batches(self, fn: Callable[[torch.Tensor, np.ndarray], torch.Tensor], batch_size: int = 256,
                    name: str | None = None, progress: Callable[[int], None] | None = None) -> "FaceArray":
        """Apply `fn(uint8 (B, 3, S, S), positions) -> uint8 (B, 3, S', S')` batch by batch."""
        out = []
        for start in range(0, len(self), batch_size):
            rows = np.arange(start, min(len(self), start + batch_size))
            result = fn(self.get_batch(rows), rows)
            if result.dtype != torch.uint8:
                raise FaceArrayError(f"a face transform must return uint8, got {result.dtype}")
            out.append(result.permute(0, 2, 3, 1).cpu().numpy())
            if progress is not None:
                progress(len(rows))
        images = np.concatenate(out) if out else np.zeros((0, self.size, self.size, 3), np.uint8)
        return self.with_images(images, name)

    @staticmethod
    def concat(parts: Sequence["FaceArray"], name: str = "") -> "FaceArray":
        """Faces of every part, in order; they must share one schema and size."""
        if not parts:
            raise FaceArrayError("nothing to concatenate")
        first = parts[0]
        for part in parts[1:]:
            if part.schema != first.schema or part.size != first.size:
                raise FaceArrayError(f"cannot concatenate {part.name!r} ({part.size} px, {part.schema.names}) "
                                     f"with {first.name!r} ({first.size} px, {first.schema.names})")
        return FaceArray(
            np.concatenate([p.images for p in parts]), torch.cat([p.targets for p in parts]),
            torch.cat([p.mask for p in parts]), first.schema, [i for p in parts for i in p.identity],
            [s for p in parts for s in p.paths], name or "+".join(p.name for p in parts),
        )

    # -- saving -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one .npz atomically (a crash leaves the old file or none, never half of one)."""
        import json

        path = Path(path)
        buffer = io.BytesIO()
        np.savez(buffer, images=self.images, targets=self._targets.numpy(), mask=self._mask.numpy(),
                 identity=np.array(["" if i is None else str(i) for i in self.identity], dtype=object).astype(str),
                 has_identity=np.array([i is not None for i in self.identity]),
                 paths=np.array(self._paths, dtype=str),
                 meta=np.array(json.dumps({"schema": self.schema.to_dict(), "name": self.name})))
        atomic_write_bytes(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FaceArray":
        import json

        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                identity = [str(i) if h else None for i, h in zip(data["identity"].tolist(), data["has_identity"].tolist())]
                return cls(data["images"], torch.from_numpy(data["targets"]), torch.from_numpy(data["mask"]),
                           LabelSchema.from_dict(meta["schema"]), identity, data["paths"].tolist(), meta["name"])
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise FaceArrayError(f"{path} is not a readable face array ({exc}); delete it to rebuild it") from exc

    def __repr__(self) -> str:
        return f"FaceArray({self.name!r}, {len(self)} faces, {self.size} px, tasks {self.schema.names})"
