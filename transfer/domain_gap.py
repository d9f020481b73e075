"""How far apart the domains are, as a number: Fréchet distances to the target's test faces.

The thesis claims that super-resolving source faces with a model trained on the target makes
them look like the target. Here that is measured. For every direction with an SR model,
each of these face sets is compared with the target's TEST faces (people that nothing in
the study trained on):
- the source's training faces as they are;
- the same faces degraded and super-resolved (what SR-mix adds);
- the same faces degraded and bicubic-upsampled (what bicubic-mix adds);
- the target's own training faces: the floor, the distance between two sets of people of one
  domain.
Two feature spaces:
- the trunk of the source-only model (seed of the first cell), globally average-pooled: what
  the classifier itself sees;
- dlib's face-recognition embedding (the offline FD-face of `gan.metrics`), when the
  `[metrics]` extra is installed.
At most `max_faces` faces per set (`max_embedded` for the slower dlib embedding), evenly spaced,
so that every set is compared at one size.

The dlib embedding costs ~0.085 s per face on 2 cores, most of the table's time: with a
`cache_dir`, each embedded batch is kept there (`gan.metrics.feature_cache`), so a study that
runs again (to add an arm, or to redraw its report) and a face set that two directions share are
embedded once.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_prep.face_array import FaceArray
from gan.metrics.frechet import frechet_distance_from_features

__all__ = ["measure_domain_gap", "trunk_features"]

log = logging.getLogger(__name__)


def _evenly(faces: FaceArray, count: int) -> np.ndarray:
    rows = np.linspace(0, len(faces) - 1, min(count, len(faces))).round().astype(np.int64)
    return np.unique(rows)


@torch.no_grad()
def trunk_features(model, faces: FaceArray, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Globally average-pooled trunk feature maps of the faces at `rows`."""
    from attributes.inference import to_model_input

    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(rows), batch_size):
        images = to_model_input(faces.get_batch(rows[start:start + batch_size]).to(device))
        out.append(model.trunk(images).mean(dim=(2, 3)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


class _CachedEmbedder:
    """An embedder's (N, 128) float64 embeddings of faces at `rows`, kept in `cache_dir` when
    given (`gan.metrics.feature_cache`)."""

    def __init__(self, embedder, cache_dir: Path | None):
        self.embedder, self.cache_dir = embedder, cache_dir
        self.depends = {"protocol": embedder.protocol()} if cache_dir is not None else {}

    def __call__(self, faces: FaceArray, rows: np.ndarray) -> np.ndarray:
        from gan.metrics.feature_cache import cached_features

        images = faces.get_batch(rows)
        return cached_features([images], self.depends, lambda: self.embedder.embed(images), self.cache_dir)


def measure_domain_gap(pairs: list[tuple[str, str]], sets, models: dict[tuple[str, str], Any], template: str,
                       max_faces: int = 600, max_embedded: int = 200,
                       cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """Fréchet distances of every direction's face sets to its target's test faces.

    `models[(source, target)]` is the source-only attribute model of that direction. Returns
    the report's table (header, rows, protocol) and the raw numbers, or None when no direction
    has an SR model. `cache_dir` keeps the dlib embeddings between calls (see the module docstring).
    """
    embedder = None
    try:
        if max_embedded <= 0:
            raise RuntimeError("switched off (domain_gap_embedded_faces: 0)")
        from gan.metrics.face_embedding import FaceEmbedder

        embedder = _CachedEmbedder(FaceEmbedder(template=template), None if cache_dir is None else Path(cache_dir))
    except Exception as exc:  # the [metrics] extra is optional: report the trunk space alone
        log.warning("FD-face left out of the domain gap: %s", exc)
    rows, numbers = [], {}
    for source, target in pairs:
        if target not in sets.sr_checkpoints:
            continue
        reference = sets.get(f"{target}/test")
        candidates = {
            f"{source} train": sets.get(f"{source}/train"),
            f"{source} train, SR by {target}'s model": sets.get(f"{source}/train|sr:{target}"),
            f"{source} train, bicubic": sets.get(f"{source}/train|bicubic:{target}"),
            f"{target} train (same domain, other people)": sets.get(f"{target}/train"),
        }
        model = models[(source, target)]
        ref_rows = _evenly(reference, max_faces)
        ref_trunk = trunk_features(model, reference, ref_rows)
        ref_embedded = _evenly(reference, max_embedded) if embedder is not None else None
        ref_face = embedder(reference, ref_embedded) if embedder is not None else None
        for label, faces in candidates.items():
            picked = _evenly(faces, max_faces)
            fd_trunk = frechet_distance_from_features(trunk_features(model, faces, picked), ref_trunk)
            fd_face = None
            if embedder is not None:
                embedded = _evenly(faces, max_embedded)
                fd_face = frechet_distance_from_features(embedder(faces, embedded), ref_face)
            numbers.setdefault(f"{source}->{target}", {})[label] = {"fd_trunk": fd_trunk, "fd_face": fd_face,
                                                                    "faces": int(len(picked)), "reference_faces": int(len(ref_rows))}
            rows.append([f"{source} -> {target}", label, f"{fd_trunk:.3f}", "n/a" if fd_face is None else f"{fd_face:.4f}"])
    if not rows:
        return None
    protocol = (
        f"Fréchet distance of each face set to the target's test faces (at most {max_faces} evenly spaced faces per set "
        f"in trunk features, {max_embedded} for FD-face, which costs ~0.08 s per face). "
        "'trunk': the source-only model's trunk features, globally average-pooled; 'FD-face': dlib's face-recognition "
        "embedding of the aligned crops (gan.metrics, offline). Lower is closer to the target. The thesis's claim is "
        "that the SR row comes closer to the target than the source and bicubic rows; the same-domain row is the floor.")
    return {"header": ["direction", "faces", "FD trunk", "FD-face"], "rows": rows, "protocol": protocol, "values": numbers}
