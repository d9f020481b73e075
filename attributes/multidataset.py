"""Dataset-parallel batches and loss weighting.

Every training step draws one batch from each dataset (Yu 2017, sec. 3.7.2). `ParallelDatasets` presents
that to the Trainer as a single map-style dataset: item `i` is a dict with one sample of every
dataset, so the Trainer's seeded, sharded, resumable sampler drives all of them at once and a
collated batch is {dataset: {"image", "targets", "mask", "index"}}.

What an epoch is: one pass over the LARGEST dataset. Each smaller dataset cycles independently:
item `i` reads position `i mod n` of a permutation of that dataset, drawn afresh (seeded by
`seed`, the dataset's name and the cycle number `i // n`) for every cycle, so within an epoch
a smaller dataset is seen about (largest / n) times, each time in a different order, and
every sample of it once per cycle. Everything is a pure function of `i`, so resuming the
Trainer's sampler resumes these cycles exactly. With balanced sampling (`SamplerConfig`), a
dataset's cycle is instead n faces drawn with replacement by `balancing_weights`, still seeded by
the cycle number.

Loss weighting: `combine_losses` adds the per-(dataset, task-group) losses with fixed weights
or with learned homoscedastic uncertainty weights (Kendall, Gal & Cipolla, CVPR 2018):
total = sum_i exp(-s_i) * L_i + s_i, with s_i = log sigma_i^2 learned. A term whose dataset has
no label for it in a batch is simply absent from that step's sum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from data_prep.images import luma
from data_prep.transforms import jitter_colour
from engine.reproducibility import derive_seed

__all__ = ["SamplerConfig", "balancing_weights", "ParallelDatasets", "combine_losses", "augment_batch"]


@dataclass
class SamplerConfig:
    # none: every face once per cycle | inverse_frequency: faces drawn with replacement, weighted
    # so that rare label values (a 2%-positive attribute, a small class) come up more often
    balance: str = "none"
    power: float = 0.5  # weight = (1 / frequency) ** power per label; 1 evens out a single task fully, 0.5 is milder


def balancing_weights(targets: torch.Tensor, mask: torch.Tensor, columns: list[int], power: float) -> np.ndarray:
    """Per-face sampling weights from label frequencies, summing to 1.

    For every labelled entry of `columns` (binary or categorical tasks), the weight of its value
    is (1 / frequency of that value in the column) ** power; a face's weight is the mean over its
    labelled entries, so for one categorical task and power 1 every class is drawn equally often,
    and for many binary attributes a face with rare values is drawn more often. Faces without
    any labelled entry keep the mean weight.
    """
    if not columns:
        raise ValueError("balanced sampling needs a binary or categorical task")
    values = targets[:, columns].round().long().numpy()
    labelled = mask[:, columns].numpy().astype(bool)
    weights = np.zeros(values.shape, dtype=np.float64)
    for j in range(values.shape[1]):
        present = labelled[:, j]
        if not present.any():
            continue
        classes, counts = np.unique(values[present, j], return_counts=True)
        frequency = dict(zip(classes.tolist(), (counts / present.sum()).tolist()))
        weights[present, j] = [(1.0 / frequency[v]) ** power for v in values[present, j].tolist()]
    n_labelled = labelled.sum(1)
    per_face = np.where(n_labelled > 0, weights.sum(1) / np.maximum(n_labelled, 1), 0.0)
    if (n_labelled == 0).any():
        per_face[n_labelled == 0] = per_face[n_labelled > 0].mean() if (n_labelled > 0).any() else 1.0
    return per_face / per_face.sum()


class ParallelDatasets(Dataset):
    """One item = one sample from every dataset; see the module docstring."""

    def __init__(self, datasets: Mapping[str, Dataset], seed: int = 0, weights: Mapping[str, np.ndarray] | None = None):
        if not datasets:
            raise ValueError("ParallelDatasets needs at least one dataset")
        self.datasets = dict(datasets)
        for name, dataset in self.datasets.items():
            if len(dataset) == 0:
                raise ValueError(f"dataset {name!r} is empty")
        self.weights = dict(weights or {})
        for name, w in self.weights.items():
            if len(w) != len(self.datasets[name]):
                raise ValueError(f"dataset {name!r}: {len(w)} sampling weights for {len(self.datasets[name])} faces")
        self.seed = seed
        self.length = max(len(d) for d in self.datasets.values())
        self._perms: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def position(self, name: str, i: int) -> int:
        """Which sample of dataset `name` item `i` holds."""
        n = len(self.datasets[name])
        weights = self.weights.get(name)
        if n == self.length and weights is None:
            return i
        cycle = i // n
        key = (name, cycle)
        perm = self._perms.get(key)
        if perm is None:
            rng = np.random.default_rng(derive_seed(self.seed, "parallel", name, cycle))
            # a weighted cycle: n faces drawn with replacement (the Trainer's sampler shuffles i)
            perm = rng.permutation(n) if weights is None else rng.choice(n, size=n, replace=True, p=weights)
            if len(self._perms) > 256:
                self._perms.clear()
            self._perms[key] = perm
        return int(perm[i % n])

    def __getitem__(self, i: int) -> dict:
        return {name: dataset[self.position(name, i)] for name, dataset in self.datasets.items()}

    def epochs_seen(self, name: str, items: int) -> float:
        """How many passes over dataset `name` `items` items amount to."""
        return items / len(self.datasets[name])


def combine_losses(
    losses: dict[str, torch.Tensor], terms: list[str], weights: Mapping[str, float], log_vars: torch.Tensor | None
) -> torch.Tensor:
    """Weighted sum of the present loss terms; `log_vars` (one per entry of `terms`) switches
    on uncertainty weighting, in which case the fixed weights still scale each term."""
    total = None
    for name, loss in losses.items():
        weight = float(weights.get(name, weights.get(name.split("/")[0], 1.0)))
        if log_vars is not None:
            s = log_vars[terms.index(name)]
            term = weight * (torch.exp(-s) * loss + s)
        else:
            term = weight * loss
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no loss term had a label in this batch")
    return total


def augment_batch(images: torch.Tensor, flip: bool = True, max_shift: int = 0, generator: torch.Generator | None = None,
                  grayscale: float = 0.0, rotate: float = 0.0, scale: float = 0.0, erase: float = 0.0,
                  color: float = 0.0) -> torch.Tensor:
    """Random horizontal flips, integer translations (edge-replicated), and on request random
    rotations (uniform in +-`rotate` degrees) with zooms (uniform in 1 +- `scale`), colour jitter
    (brightness, contrast and saturation each scaled by its own factor uniform in 1 +- `color`),
    grayscale copies (probability `grayscale`, luma in all three channels) and random erasing
    (probability `erase`: one rectangle of 2-20% of the face, aspect 1:3 to 3:1, set to 0, the
    mid-grey of the [-1, 1] input). Grayscale copies let colour datasets teach a head that is also
    used on grayscale ones (LFW-a); rotations, zooms, colour jitter and erasing fight the
    overfitting to the few identities and cameras of a small training set.

    Draws from `generator` (or torch's global RNG, which the Trainer checkpoints), so a
    resumed run augments exactly as an uninterrupted one. The optional ones draw only when
    asked, so runs without them keep their random stream. Flipping is only safe for tasks that
    are symmetric: no left/right attribute exists in CelebA, LFW, UTKFace or Adience.
    """
    b = images.shape[0]
    if flip:
        flips = torch.rand(b, generator=generator) < 0.5
        images = torch.where(flips.view(b, 1, 1, 1).to(images.device), images.flip(-1), images)
    if max_shift > 0:
        size_h, size_w = images.shape[-2:]
        padded = torch.nn.functional.pad(images, (max_shift,) * 4, mode="replicate")
        shifts = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).tolist()
        images = torch.stack([padded[k, :, dy:dy + size_h, dx:dx + size_w] for k, (dy, dx) in enumerate(shifts)])
    if rotate > 0 or scale > 0:
        images = _rotate_and_zoom(images, rotate, scale, generator)
    if color > 0:
        images = _jitter_colour(images, color, generator)
    if grayscale > 0:
        chosen = torch.rand(b, generator=generator) < grayscale
        grey = luma(images).expand_as(images)
        images = torch.where(chosen.view(b, 1, 1, 1).to(images.device), grey, images)
    if erase > 0:
        images = _erase_rectangles(images, erase, generator)
    return images


def mixup_partners(layout: list[tuple[str, int]], extra: int, alpha: float,
                   generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]:
    """Mixup (Zhang et al., ICLR 2018) across the concatenated batch: one weight lam ~ Beta(alpha,
    alpha) and, for every face, a partner drawn from the same dataset's slice, so that a mixed
    face's two label sets come from one label schema. Returns lam and the partner index of each
    face of the batch (the `extra` unlabelled faces at the end pair among themselves).
    Draws from `generator` (or the global RNG, which the Trainer checkpoints)."""
    # torch.distributions takes no generator; Beta(a, a) is X / (X + Y) for X, Y ~ Gamma(a, 1).
    gammas = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    lam = float(gammas[0] / gammas.sum())
    partners, start = [], 0
    for size in [size for _, size in layout] + ([extra] if extra else []):
        partners.append(start + torch.randperm(size, generator=generator))
        start += size
    return lam, torch.cat(partners) if partners else torch.zeros(0, dtype=torch.long)


def _rotate_and_zoom(images: torch.Tensor, rotate: float, scale: float, generator: torch.Generator | None) -> torch.Tensor:
    """Each image turned by its own angle and zoomed by its own factor about the centre
    (bilinear, edges replicated): a zoom above 1 shows a tighter crop."""
    b = images.shape[0]
    angles = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(rotate)
    zooms = 1.0 + (torch.rand(b, generator=generator) * 2 - 1) * scale
    cos, sin = torch.cos(angles) / zooms, torch.sin(angles) / zooms
    # affine_grid maps output coordinates to input ones, so the inverse transform goes here.
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter_colour(images: torch.Tensor, amount: float, generator: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast and saturation of each [-1, 1] image scaled by factors uniform in
    1 +- `amount`, as torchvision's ColorJitter does (contrast about the luma mean), clamped to [-1, 1]."""
    b = images.shape[0]
    factors = (1.0 + (torch.rand(3, b, generator=generator) * 2 - 1) * amount).to(images.device, images.dtype)
    brightness, contrast, saturation = (f.view(b, 1, 1, 1) for f in factors)
    return jitter_colour(images, brightness, contrast, saturation, black=-1.0, clamp=(-1.0, 1.0), contrast_pivot="luma")


def _erase_rectangles(images: torch.Tensor, probability: float, generator: torch.Generator | None) -> torch.Tensor:
    """With `probability` per image, one random rectangle (2-20% of the area, aspect 1:3 to 3:1) set to 0."""
    b, _, height, width = images.shape
    chosen = (torch.rand(b, generator=generator) < probability).tolist()
    areas = (0.02 + torch.rand(b, generator=generator) * 0.18) * height * width
    aspects = torch.exp((torch.rand(b, generator=generator) * 2 - 1) * math.log(3.0))
    corners = torch.rand(b, 2, generator=generator)
    images = images.clone()
    for k in range(b):
        if not chosen[k]:
            continue
        h = max(1, min(height, round(math.sqrt(float(areas[k] * aspects[k])))))
        w = max(1, min(width, round(math.sqrt(float(areas[k] / aspects[k])))))
        top = int(corners[k, 0] * (height - h + 1))
        left = int(corners[k, 1] * (width - w + 1))
        images[k, :, top:top + h, left:left + w] = 0.0
    return images
