"""Named face sets of a study, built on demand and cached (see `transfer.arms` for the names).

The splits of each domain come straight from its aligned-face cache. Transformed sets
(super-resolved, bicubic, augmented, grayscale, colour-matched) are written to
`<study>/facesets/` as .npz files named by a fingerprint of everything they depend on, so a
rerun of the study reads them back instead of recomputing, and a changed setting (another SR
checkpoint, say) builds a new file instead of reusing a stale one.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from attributes.data import prepare_datasets
from data_prep.face_array import FaceArray
from data_prep.images import luma
from data_prep.transforms import gaussian_blur, jitter_colour
from engine.checkpoint import config_fingerprint
from data_prep.sources import LATER_SOURCE_DEFAULTS
from engine.config import to_dict, without_later_defaults
from engine.errors import FaceganError
from engine.reproducibility import derive_seed
from transfer.config import AugmentMixConfig, StudyConfig, faceset_parts, faceset_transform

__all__ = ["FaceSets", "to_grayscale", "match_channel_stats", "channel_stats", "augment_faces", "StudyDataError"]

log = logging.getLogger(__name__)


class StudyDataError(FaceganError):
    """A face set of the study cannot be built as named."""


# ------------------------------------------------------------------------------------------
# Transforms of uint8 (B, 3, S, S) faces
# ------------------------------------------------------------------------------------------
def to_grayscale(faces: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma in all three channels (what a grayscale JPEG decodes to as RGB)."""
    return luma(faces.float()).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def channel_stats(faces: FaceArray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (0..255) over every pixel of every face."""
    x = faces.images.reshape(-1, 3).astype(np.float64)
    return x.mean(0), x.std(0)


def match_channel_stats(faces: torch.Tensor, own: tuple[np.ndarray, np.ndarray],
                        wanted: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
    """The per-channel affine map that takes the statistics `own` to `wanted`."""
    mean_a, std_a = (torch.as_tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in own)
    mean_b, std_b = (torch.as_tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in wanted)
    x = (faces.float() - mean_a) / std_a.clamp(min=1e-3) * std_b + mean_b
    return x.round().clamp(0, 255).to(torch.uint8)


def augment_faces(faces: torch.Tensor, seeds: list[int], config: AugmentMixConfig) -> torch.Tensor:
    """Colour jitter, random grayscale, Gaussian blur and noise, drawn per face from its seed
    (so a face's copy does not depend on the batch it was in)."""
    out = []
    for face, seed in zip(faces.float(), seeds):
        g = torch.Generator().manual_seed(int(seed))
        u = torch.rand(8, generator=g, dtype=torch.float64).tolist()
        # on 0..255, unclamped until the end, contrast about the mean of all the face's values
        x = jitter_colour(face, 1 - config.brightness + 2 * config.brightness * u[0],
                          1 - config.contrast + 2 * config.contrast * u[1],
                          1 - config.saturation + 2 * config.saturation * u[2], black=0.0, contrast_pivot="mean")
        if u[3] < config.grayscale_prob:
            x = luma(x).expand(3, -1, -1)
        if u[4] < config.blur_prob:
            sigma = config.blur_sigma[0] + u[5] * (config.blur_sigma[1] - config.blur_sigma[0])
            x = gaussian_blur(x[None], [sigma])[0]
        if u[6] < config.noise_prob:
            sigma = config.noise_sigma[0] + u[7] * (config.noise_sigma[1] - config.noise_sigma[0])
            x = x + torch.randn(x.shape, generator=g) * sigma
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.stack(out) if out else faces.clone()


# ------------------------------------------------------------------------------------------
# The named sets
# ------------------------------------------------------------------------------------------
class FaceSets:
    """`sets.get("lfw/train|sr:celeba")` builds (or reads back) that face set.

    `sr_checkpoints` maps a target domain to the SR checkpoint trained on its train split; it
    is filled in by the study's SR stage before any `sr:` or `bicubic:` set is asked for.
    """

    def __init__(self, config: StudyConfig, out_dir: Path, progress: bool = True, device: str | torch.device = "cpu"):
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.device = torch.device(device)
        self.sr_checkpoints: dict[str, Path] = {}
        self._memory: dict[str, FaceArray] = {}
        self._splits: dict[str, object] = {}
        self._sr_models: dict[str, object] = {}
        self._depends: dict[str, dict] = {}  # what each transformed set was built from, for the sets chained on it

    # -- domains --------------------------------------------------------------------------------
    def domain_splits(self, domain: str):
        """The aligned cache views (train, val, test) of a domain, aligned once and reused."""
        if domain not in self._splits:
            if domain not in self.config.domains:
                raise StudyDataError(f"unknown domain {domain!r}; the study has {sorted(self.config.domains)}")
            entry = self.config.domains[domain]
            size = self.config.model.trunk.input_size
            self._splits[domain] = prepare_datasets({domain: entry}, size, self.out_dir, progress=self.progress)[domain]
        return self._splits[domain]

    def skipped(self, domain: str) -> int:
        """Images of the domain the aligner could not use (unreadable or no face)."""
        return len(self.domain_splits(domain).train.skipped)

    def _base(self, domain: str, split: str) -> FaceArray:
        splits = self.domain_splits(domain)
        view = {"train": splits.train, "val": splits.val, "test": splits.test}.get(split)
        if view is None:
            raise StudyDataError(f"unknown split {split!r} in face set {domain}/{split}")
        faces = FaceArray.from_cache(view, self.config.tasks, name=f"{domain}/{split}")
        if len(faces) == 0:
            raise StudyDataError(f"domain {domain!r} has no labelled faces for {self.config.tasks} in its {split} split")
        return faces

    # -- lookup ---------------------------------------------------------------------------------
    def get(self, name: str) -> FaceArray:
        parts = faceset_parts(name)
        name = " + ".join(parts)
        if name in self._memory:
            return self._memory[name]
        transform = faceset_transform(name)
        if len(parts) > 1:
            faces = FaceArray.concat([self.get(part) for part in parts], name=name)
        elif transform is not None:
            faces = self._transformed(name, *transform)
        else:
            domain, _, split = name.partition("/")
            faces = self._base(domain, split)
        self._memory[name] = faces
        return faces

    def _transformed(self, name: str, base_name: str, kind: str, argument: str) -> FaceArray:
        base = self.get(base_name)
        domain = base_name.split("/")[0]
        options = self.config.options
        entry = without_later_defaults(to_dict(self.config.domains[domain]), LATER_SOURCE_DEFAULTS)
        depends: dict = {"name": name, "base": [len(base), self.config.domains[domain].source, entry],
                         "tasks": self.config.tasks, "size": self.config.model.trunk.input_size}
        if faceset_transform(base_name) is not None:  # a chain: whatever the set before depends on
            depends["before"] = self._depends.get(base_name)
        if kind in ("sr", "bicubic"):
            checkpoint = self.sr_checkpoints.get(argument)
            if checkpoint is None:
                raise StudyDataError(f"face set {name!r} needs the SR model of domain {argument!r}, which the study has not "
                                     "prepared (is that domain a target with an SR stage?)")
            stat = Path(checkpoint).stat()
            depends.update(checkpoint=str(checkpoint), bytes=stat.st_size, mtime=int(stat.st_mtime))
        elif kind == "stats":
            depends.update(target=argument, target_faces=len(self.get(f"{argument}/train")))
        elif kind not in ("gray", "augment"):
            raise StudyDataError(f"unknown face transform {kind!r} in {name!r}")
        depends.update(options.used_by_transform(kind))
        self._depends[name] = depends
        path = self.out_dir / "facesets" / f"{_slug(name)}-{config_fingerprint(depends)}.npz"
        if path.is_file():
            try:
                cached = FaceArray.load(path)
                if len(cached) == len(base):
                    return cached
            except FaceganError as exc:
                log.warning("%s; building it again", exc)
        log.info("building face set %s (%d faces)", name, len(base))
        faces = base.map_batches(self._transform_fn(kind, argument, domain, base_name), batch_size=128, name=name)
        faces.save(path)
        return faces

    def _transform_fn(self, kind: str, argument: str, domain: str,
                      base_name: str) -> Callable[[torch.Tensor, np.ndarray], torch.Tensor]:
        options = self.config.options
        if kind == "gray":
            return lambda faces, rows: to_grayscale(faces)
        if kind == "stats":
            # A split is mapped with its domain's train statistics; a transformed train set with its own.
            own = channel_stats(self.get(re.sub(r"^([^/|]+)/(test|val)", r"\1/train", base_name)))
            wanted = channel_stats(self.get(f"{argument}/train"))
            return lambda faces, rows: match_channel_stats(faces, own, wanted)
        if kind == "augment":
            return lambda faces, rows: augment_faces(
                faces, [derive_seed(options.degradation_seed, "augment", domain, int(r)) for r in rows], options.augment)
        upsample = self._upsampler(argument, use_sr=(kind == "sr"))
        return lambda faces, rows: upsample(faces, [derive_seed(options.degradation_seed, "degrade", domain, int(r)) for r in rows])

    def _upsampler(self, target: str, use_sr: bool) -> Callable[[torch.Tensor, list[int]], torch.Tensor]:
        """HR faces -> the SR model's degradation -> SR (or bicubic) -> back at the study's size."""
        from data_prep.degrade import Degradation, bicubic_upsample
        from data_prep.transforms import resize_images, to_uint8_range, to_unit_range
        from gan.sr.inference import load_sr_checkpoint, super_resolve

        if target not in self._sr_models:
            self._sr_models[target] = load_sr_checkpoint(self.sr_checkpoints[target], device=self.device)
        loaded = self._sr_models[target]
        degrade = Degradation(loaded.config.degradation, loaded.scale)
        size = self.config.model.trunk.input_size

        def upsample(faces: torch.Tensor, seeds: list[int]) -> torch.Tensor:
            hr = faces  # uint8: degrade_uint8 reads a float batch as [-1, 1]
            if hr.shape[-1] != loaded.output_size:
                hr = resize_images(hr.float(), loaded.output_size).round().clamp(0, 255).to(torch.uint8)
            lr = to_unit_range(degrade.degrade_uint8(hr, seeds))
            if use_sr:
                up = super_resolve(loaded.generator, lr)
            else:
                up = bicubic_upsample(lr, loaded.scale).clamp(-1, 1)
            out = to_uint8_range(up.cpu())
            if out.shape[-1] != size:
                out = resize_images(out, size)
            return out.round().clamp(0, 255).to(torch.uint8)

        return upsample


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80]
