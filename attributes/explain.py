"""Grad-CAM heat maps of attribute heads (Selvaraju et al., ICCV 2017), with the model-randomisation
sanity check of Adebayo et al. (NeurIPS 2018).

For one head output (a binary attribute, a categorical task, an age) and one face, Grad-CAM
weights each channel of a trunk layer's activation A_k by the spatial mean of the output's
gradient with respect to it, and keeps the positive part of the weighted sum: ReLU(sum_k w_k A_k),
upsampled to the face. The explained output is the one behind the prediction: a binary
attribute's logit signed by the predicted answer, the predicted class's logit, or the age.

Sanity check: the head's weights are re-drawn at random and the maps computed again. A map that
explains the head must change with it; one that stays the same shows only what the trunk (or
the input's edges) would show for any head. The change is measured per face and output by the
Spearman rank correlation between the two maps (1: unchanged ranking).
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import FaceganError

__all__ = ["Target", "targets_for", "grad_cam", "randomized_head", "rank_correlation", "explain_faces",
           "save_overlays", "explain_paths"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One explained output: a task of a group of a dataset's head."""

    group: str
    task: str
    index: int  # the task's position within its group


def targets_for(model, dataset: str, tasks: Sequence[str] | None = None, limit: int = 6) -> list[Target]:
    """The outputs to explain: `tasks` by name, or the first `limit` tasks of the head."""
    available = [Target(g.name, t.name, k) for g in model.groups[dataset] for k, t in enumerate(g.tasks)]
    if not tasks:
        return available[:limit]
    by_name = {t.task: t for t in available}
    unknown = [t for t in tasks if t not in by_name]
    if unknown:
        raise FaceganError(f"head {dataset!r} has no task {unknown}; it has {list(by_name)}")
    return [by_name[t] for t in tasks]


def _layer(model, name: str | None) -> torch.nn.Module:
    name = name or getattr(model.trunk, "cam_layer", "")
    if not name:
        return model.trunk
    modules = dict(model.trunk.named_modules())
    if name not in modules:
        raise FaceganError(f"no trunk layer {name!r}; choose from {[n for n in modules if n][:40]}")
    return modules[name]


def _explained_score(group, out: torch.Tensor, index: int) -> torch.Tensor:
    """(B,) the output behind the prediction of task `index` of `group`."""
    from data_prep.datasets.schema import TaskKind

    if group.kind is TaskKind.REGRESSION:
        if group.bins:
            ages = torch.arange(group.bins, dtype=out.dtype, device=out.device) + group.value_range[0]
            return (out.softmax(-1) * ages).sum(-1)
        return out[:, 0]
    if group.kind is TaskKind.BINARY:
        if group.sa:
            logits = out.view(out.shape[0], len(group.tasks), 3)[:, index, :2]
            return logits.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
        logit = out[:, index]
        return torch.where(logit >= 0, logit, -logit)  # evidence for the predicted answer
    logits = out[:, :group.num_classes]
    return logits.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)


def grad_cam(model, images: torch.Tensor, dataset: str, targets: Sequence[Target], layer: str | None = None
             ) -> dict[str, torch.Tensor]:
    """{task: (B, S, S) maps in [0, 1]} for float model inputs `images` (B, 3, S, S)."""
    module = _layer(model, layer)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    model.eval()
    try:
        with torch.enable_grad():
            images = images.detach().requires_grad_(True)  # so the activation has a graph even in a frozen model
            outputs, _ = model(images, [(dataset, images.shape[0])])
            activation = captured[-1]
            groups = {g.name: g for g in model.groups[dataset]}
            maps = {}
            for target in targets:
                score = _explained_score(groups[target.group], outputs[dataset][target.group].float(), target.index)
                (gradient,) = torch.autograd.grad(score.sum(), activation, retain_graph=True)
                weights = gradient.mean((2, 3), keepdim=True)
                cam = F.relu((weights * activation).sum(1, keepdim=True)).detach()
                cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                peak = cam.flatten(1).max(1).values.clamp(min=1e-12).view(-1, 1, 1)
                maps[target.task] = (cam / peak).cpu()
    finally:
        handle.remove()
    return maps


def randomized_head(model, dataset: str, seed: int = 0):
    """A copy of `model` whose head sub-networks for `dataset` are re-initialised at random."""
    randomized = copy.deepcopy(model)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for subnet in {g.subnet for g in randomized.groups[dataset]}:
            for module in randomized.head_module(subnet).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    finally:
        torch.random.set_rng_state(generator_state)
    return randomized


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation of two maps (ties broken by position); 1.0 when both are flat and equal."""
    x, y = a.flatten().double(), b.flatten().double()
    if torch.equal(x, y):
        return 1.0
    rx = x.argsort().argsort().double()
    ry = y.argsort().argsort().double()
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.norm() * ry.norm()).item()
    return float((rx * ry).sum().item() / denominator) if denominator > 0 else 0.0


def explain_faces(model, faces: torch.Tensor, dataset: str, targets: Sequence[Target], layer: str | None = None,
                  sanity: bool = True, seed: int = 0) -> dict[str, Any]:
    """Grad-CAM maps (and, with `sanity`, those of a randomised head and their rank correlations)
    for uint8 faces (B, 3, S, S)."""
    from attributes.inference import raw_outputs, to_model_input
    from attributes.heads import decode_group

    device = next(model.parameters()).device
    x = to_model_input(faces.to(device))
    result: dict[str, Any] = {"maps": grad_cam(model, x, dataset, targets, layer)}
    outputs = raw_outputs(model, faces.to(device), dataset)
    groups = {g.name: g for g in model.groups[dataset]}
    result["labels"] = [_describe(groups[t.group], decode_group(groups[t.group], outputs[t.group]), t) for t in targets]
    if sanity:
        random_maps = grad_cam(randomized_head(model, dataset, seed), x, dataset, targets, layer)
        result["random_maps"] = random_maps
        result["rank_correlation"] = {
            t.task: [rank_correlation(result["maps"][t.task][i], random_maps[t.task][i]) for i in range(len(faces))]
            for t in targets
        }
    return result


def _describe(group, decoded: dict[str, torch.Tensor], target: Target) -> list[str]:
    from data_prep.datasets.schema import TaskKind

    if group.kind is TaskKind.REGRESSION:
        return [f"{target.task} {float(v):.0f}" for v in decoded["value"]]
    if group.kind is TaskKind.BINARY:
        return [f"{target.task}: {'yes' if p >= 0.5 else 'no'} {max(float(p), 1 - float(p)):.2f}"
                for p in decoded["prob"][:, target.index]]
    classes = group.tasks[0].classes
    return [f"{target.task}: {classes[int(k)]} {float(p):.2f}" for k, p in zip(decoded["pred"], decoded["max_softmax"])]


def save_overlays(path: str | Path, faces: torch.Tensor, explained: dict[str, Any], names: Sequence[str] | None = None) -> None:
    """One PNG: a row per face (the face, then each task's overlay), and below each row the maps
    of the randomised head when the sanity check ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(explained["maps"])
    rows_per_face = 2 if "random_maps" in explained else 1
    n = faces.shape[0]
    fig, axes = plt.subplots(n * rows_per_face, len(tasks) + 1, figsize=(1.9 * (len(tasks) + 1), 2.0 * n * rows_per_face),
                             squeeze=False)
    pictures = faces.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        for r in range(rows_per_face):
            row = axes[i * rows_per_face + r]
            maps = explained["maps"] if r == 0 else explained["random_maps"]
            row[0].imshow(pictures[i])
            row[0].set_title((names[i] if names else f"face {i}") if r == 0 else "randomised head", fontsize=7)
            for j, task in enumerate(tasks):
                row[j + 1].imshow(pictures[i])
                row[j + 1].imshow(maps[task][i].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
                if r == 0:
                    title = explained["labels"][j][i]
                else:
                    title = f"rank corr {explained['rank_correlation'][task][i]:.2f}"
                row[j + 1].set_title(title, fontsize=7)
            for ax in row:
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def explain_paths(checkpoint: str | Path, inputs: list[Path], out_dir: str | Path, head: str | None = None,
                  tasks: Sequence[str] | None = None, layer: str | None = None, sanity: bool = True,
                  device: str = "cpu", use_ema: bool = True, seed: int = 0) -> dict[str, Any]:
    """Align the photos in `inputs`, explain them, and write OUT/gradcam.png and OUT/gradcam.json."""
    from attributes.predict import aligned_photo_batches
    from attributes.inference import load_attribute_model, single_network
    from engine.checkpoint import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_attribute_model(checkpoint, use_ema=use_ema, device=device)
    model = single_network(loaded, "Grad-CAM")
    head = head or list(model.groups)[0]
    if head not in model.groups:
        raise FaceganError(f"no head {head!r} in {checkpoint}; it has {list(model.groups)}")
    chosen = targets_for(model, head, tasks)
    entry = loaded.config.datasets.get(head)
    faces, names, failures = [], [], []
    for batch, kept, failed in aligned_photo_batches(inputs, model.input_size, entry.template if entry else "thesis",
                                                     device, batch_size=16):
        failures += failed
        faces.append(batch)
        names += [Path(path).name for path, _ in kept]
    if not names:
        raise FaceganError("no face could be aligned in the given images: " +
                           "; ".join(f"{f['path']}: {f['reason']}" for f in failures))
    faces_t = torch.cat(faces)
    explained = explain_faces(model, faces_t, head, chosen, layer, sanity, seed)
    save_overlays(out_dir / "gradcam.png", faces_t, explained, names)
    summary = {
        "checkpoint": str(checkpoint), "head": head, "layer": layer or getattr(model.trunk, "cam_layer", "trunk"),
        "tasks": [t.task for t in chosen], "faces": names, "skipped": failures,
        "predictions": {t.task: explained["labels"][j] for j, t in enumerate(chosen)},
    }
    if sanity:
        correlations = explained["rank_correlation"]
        summary["sanity"] = {
            "check": "head weights re-drawn at random; Spearman rank correlation of each map with the original",
            "rank_correlation": correlations,
            "mean_rank_correlation": float(np.mean([c for v in correlations.values() for c in v])),
        }
    atomic_write_text(out_dir / "gradcam.json", json.dumps(summary, indent=2))
    return summary
