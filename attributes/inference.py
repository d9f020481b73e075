"""Running an attribute model over images: batched, eval mode, optional flip test-time augmentation.

Images are uint8 (B, 3, S, S) aligned faces, normalised here exactly as in training
(`to_model_input`), so training, evaluation and `predict` cannot drift apart.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from attributes.heads import decode_group
from attributes.model import AttributeModel
from data_prep.datasets.schema import TaskKind

__all__ = ["to_model_input", "raw_outputs", "predict_images", "predict_cache", "best_thresholds", "binary_validation"]


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


@torch.no_grad()
def raw_outputs(model: AttributeModel, images: torch.Tensor, dataset: str, flip_tta: bool = False) -> dict[str, torch.Tensor]:
    """Raw group outputs for one batch of uint8 faces of `dataset` (averaged over a flip when asked)."""
    x = to_model_input(images)
    outputs, _ = model(x, [(dataset, x.shape[0])])
    outputs = outputs[dataset]
    if flip_tta:
        flipped, _ = model(x.flip(-1), [(dataset, x.shape[0])])
        outputs = {k: (v + flipped[dataset][k]) / 2 for k, v in outputs.items()}
    return outputs


@torch.no_grad()
def predict_images(model: AttributeModel, batches: Iterable[torch.Tensor], dataset: str, device: torch.device | str = "cpu",
                   flip_tta: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Decoded predictions of every group over all `batches`, concatenated on the CPU, plus
    the raw outputs under `"raw"`."""
    model.eval()
    collected: dict[str, dict[str, list[torch.Tensor]]] = {}
    for images in batches:
        outputs = raw_outputs(model, images.to(device), dataset, flip_tta)
        for group in model.groups[dataset]:
            decoded = decode_group(group, outputs[group.name])
            decoded["raw"] = outputs[group.name].float()
            slot = collected.setdefault(group.name, {})
            for key, value in decoded.items():
                slot.setdefault(key, []).append(value.cpu())
    return {g: {k: torch.cat(v) for k, v in d.items()} for g, d in collected.items()}


def predict_cache(model: AttributeModel, cache, dataset: str, batch_size: int = 256, device: torch.device | str = "cpu",
                  flip_tta: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """`predict_images` over every face of an `AlignedFaceCache` (or a view of it)."""
    n = len(cache)
    batches = (cache.get_batch(np.arange(start, min(n, start + batch_size))) for start in range(0, n, batch_size))
    return predict_images(model, batches, dataset, device, flip_tta)


def best_thresholds(prob: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, grid: int = 99) -> torch.Tensor:
    """Per-attribute decision thresholds maximising accuracy on (validation) data.

    With few positives a model trained with BCE is rarely calibrated at exactly 0.5; choosing
    each attribute's threshold on held-out people is the usual remedy. Ties keep the threshold
    closest to 0.5, and an attribute with no labelled example keeps 0.5.
    """
    candidates = torch.linspace(0.01, 0.99, grid)
    t = targets.bool()
    result = torch.full((prob.shape[1],), 0.5)
    for k in range(prob.shape[1]):
        known = mask[:, k]
        if not known.any():
            continue
        p, y = prob[known, k], t[known, k]
        acc = ((p.unsqueeze(0) >= candidates.unsqueeze(1)) == y.unsqueeze(0)).float().mean(1)
        best = acc.max()
        ties = torch.nonzero(acc >= best - 1e-9).flatten()
        result[k] = candidates[ties[(candidates[ties] - 0.5).abs().argmin()]]
    return result


def binary_validation(dataset: str, group: str, prob: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                      calibrate: bool) -> tuple[float, dict[str, float], torch.Tensor | None]:
    """(accuracy at 0.5, metrics, thresholds) of one binary group on validation faces; with
    `calibrate` the thresholds are chosen on them and their accuracy is reported too. A dataset's
    own attributes log as "DATASET/accuracy"; a task shared across datasets (gender, say) beside
    them, not over them, as "DATASET/TASK_accuracy"."""
    prefix = f"{dataset}/" if group == "binary" else f"{dataset}/{group}_"
    truth = targets.bool()
    accuracy = float(((prob >= 0.5) == truth)[mask].float().mean())
    metrics = {f"{prefix}accuracy": accuracy}
    thresholds = best_thresholds(prob, targets, mask) if calibrate else None
    if thresholds is not None:
        metrics[f"{prefix}accuracy_calibrated"] = float(((prob >= thresholds) == truth)[mask].float().mean())
    return accuracy, metrics, thresholds


def threshold_key(dataset: str, group: str) -> str:
    """Where a binary group's calibrated thresholds are kept: the dataset's own "binary" group
    under its name, a shared binary task (gender shared across datasets, say) under
    "dataset/task", so that one cannot overwrite the other."""
    return dataset if group == "binary" else f"{dataset}/{group}"


def calibrated_thresholds(thresholds: dict[str, torch.Tensor], dataset: str, group) -> torch.Tensor | None:
    """The thresholds of `group` on `dataset`'s data, or None when none were chosen (or a
    checkpoint written before shared groups had their own key holds some of the wrong size)."""
    value = thresholds.get(threshold_key(dataset, group.name))
    if value is None or value.numel() != len(group.tasks):
        return None
    return value


def group_targets(cache, group) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, mask) of a group's columns over a whole cache view."""
    return cache.targets[:, group.columns], cache.mask[:, group.columns]


def is_binary(group) -> bool:
    return group.kind is TaskKind.BINARY
