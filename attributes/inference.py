"""Using a trained attribute model: load it from a checkpoint (`load_attribute_model`, one network
or an ensemble) and run it over images, batched, in eval mode, with optional flip test-time
augmentation.

Images are uint8 (B, 3, S, S) aligned faces, normalised here exactly as in training
(`to_model_input`), so training, evaluation and `predict` cannot drift apart.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch
from torch import nn

from attributes.heads import decode_group
from attributes.model import AttributeEnsemble, AttributeModel, build_attribute_model, check_layout
from data_prep.datasets.schema import LabelSchema, TaskKind
from engine.checkpoint import load_checkpoint, module_weights
from engine.config import from_dict
from engine.errors import FaceganError

if TYPE_CHECKING:  # attributes.config imports the step, which runs these predictions
    from attributes.config import AttributeRunConfig

log = logging.getLogger(__name__)

__all__ = ["FastAttributeModel", "to_model_input", "raw_outputs", "predict_images", "predict_cache", "best_thresholds",
           "binary_validation", "LoadedModel", "load_attribute_model", "single_network", "run_of", "ensemble_from"]


# Faces per forward pass of the CPU fast path (FastAttributeModel): measured best of 16, 32 and
# 64 for both shipped presets by benchmarks/attributes_fast_path.py --micro-batches.
CPU_MICRO_BATCH = 32


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


# ------------------------------------------------------------------ the inference fast path
class FastAttributeModel(nn.Module):
    """A trained attribute model (or ensemble) for prediction only: every BatchNorm folded into
    its convolution (engine.fold), NHWC inputs, on the CPU run in micro-batches of
    `micro_batch` faces, and with `dtype` bfloat16 autocast. Called and read like the model
    itself (`groups`, `schemas`, `input_size`); outputs are float32.

    Micro-batches: the first convolutions of a batch of 256 faces at 80 px write 100 MB feature
    maps, which leave the CPU's caches and make those layers wait on memory; 32 faces at a time
    stay in cache (benchmarks/attributes_fast_path.py measures both). Each face's outputs do
    not depend on the others in eval mode, so splitting changes nothing but the speed. On a GPU
    the whole batch runs at once.

    Folding changes the arithmetic, not the function: outputs stay within 1e-5 of the trained
    model's (tested). bfloat16 keeps 8 bits of mantissa: logits move by about 1e-3.
    """

    def __init__(self, model: AttributeModel | AttributeEnsemble, dtype: torch.dtype | None = None,
                 micro_batch: int | None = CPU_MICRO_BATCH):
        super().__init__()
        members = model.members if isinstance(model, AttributeEnsemble) else [model]
        self.members = nn.ModuleList(_folded(member) for member in members)
        self.groups, self.schemas, self.input_size = model.groups, model.schemas, model.input_size
        self.dtype, self.micro_batch = dtype, micro_batch

    def forward(self, images: torch.Tensor, layout: list[tuple[str, int]], unlabelled: int = 0):
        check_layout(images, layout, unlabelled)
        images = images.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(images.device.type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
        outputs: dict[str, dict[str, list[torch.Tensor]]] = {}
        with torch.no_grad(), autocast:
            for dataset, start, stop in self._pieces(layout, images.device):
                piece = images[start:stop]
                results = [member(piece, [(dataset, stop - start)])[0][dataset] for member in self.members]
                slot = outputs.setdefault(dataset, {})
                for name in results[0]:
                    slot.setdefault(name, []).append(torch.stack([r[name].float() for r in results]).mean(0))
            log_vars = torch.stack([member.log_vars.float() for member in self.members]).mean(0)
        return {dataset: {name: torch.cat(parts) for name, parts in groups.items()}
                for dataset, groups in outputs.items()}, log_vars

    def _pieces(self, layout: list[tuple[str, int]], device: torch.device):
        """(dataset, start, stop) spans of at most `micro_batch` faces of one dataset each;
        images past the layout (`unlabelled`) feed nothing at inference and are skipped."""
        size = self.micro_batch if self.micro_batch and device.type == "cpu" else None
        start = 0
        for dataset, count in layout:
            step = size or max(count, 1)
            if count == 0:
                yield dataset, start, start
            for offset in range(0, count, step):
                yield dataset, start + offset, start + min(offset + step, count)
            start += count


def _folded(model: AttributeModel) -> AttributeModel:
    from engine.fold import fold_batchnorm

    fast = copy.deepcopy(model).eval()
    fast.trunk = fold_batchnorm(fast.trunk, inplace=True)
    for head in fast.heads.values():
        head.conv = fold_batchnorm(head.conv, inplace=True)
    return fast.to(memory_format=torch.channels_last).requires_grad_(False)


# ------------------------------------------------------------------ loading a trained model
@dataclass
class LoadedModel:
    model: AttributeModel | AttributeEnsemble
    config: AttributeRunConfig
    thresholds: dict[str, torch.Tensor]
    step: int
    path: Path
    _fast: dict = field(default_factory=dict, repr=False)

    def fast(self, bf16: bool = False) -> FastAttributeModel:
        """The model's inference fast path (made once per precision): BN folded, NHWC, and with
        `bf16` bfloat16 autocast where the CPU computes it natively (else float32, said once)."""
        from engine.device import cpu_has_native_bfloat16

        device = next(self.model.parameters()).device
        native = cpu_has_native_bfloat16() if device.type == "cpu" else device.type == "cuda" and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16 and native else None
        if bf16 and dtype is None:
            log.warning("--bf16: this %s has no native bfloat16 (AVX512-BF16 or AMX), where it would be slower: "
                        "predicting in float32", device.type)
        if dtype not in self._fast:
            self._fast[dtype] = FastAttributeModel(self.model, dtype).to(device).eval()
        return self._fast[dtype]


def load_attribute_model(checkpoint: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained attribute model (EMA weights by default) from a checkpoint; an ensemble
    checkpoint (`members: K`) gives an `AttributeEnsemble`."""
    path = Path(checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    config, schemas = run_of(state, path)
    if state.get("format") == "attribute-ensemble":
        model = ensemble_from(config, schemas, state["members"], use_ema)
    else:
        weights, _ = module_weights(state, "model", use_ema, path)
        model = _network(config, schemas, weights)
    model.to(device).eval()
    thresholds = dict(state.get("step_state", {}).get("thresholds", {}))
    return LoadedModel(model, config, thresholds, int(state.get("global_step", 0)), path)


def single_network(loaded: LoadedModel, tool: str) -> AttributeModel:
    """`loaded.model` for a tool that reaches inside one network; an ensemble is refused with
    the member checkpoint to give instead."""
    from attributes.config import member_dir

    if isinstance(loaded.model, AttributeEnsemble):
        member = member_dir(loaded.path.parent.parent, 0) / "checkpoints" / loaded.path.name
        raise FaceganError(f"{loaded.path} is an ensemble of {len(loaded.model.members)} networks, and {tool} works on one: "
                           f"give it a member's checkpoint, such as {member}")
    return loaded.model


def run_of(state: dict, path: Path) -> tuple[AttributeRunConfig, dict[str, LabelSchema]]:
    """The run config and label schemas a checkpoint was trained with."""
    from attributes.config import AttributeRunConfig

    run = dict(state.get("run_config") or {})
    if "schemas" not in run or "model" not in run:
        raise FaceganError(f"{path} is not an attribute-model checkpoint (no schemas / model config in it)")
    schemas = {name: LabelSchema.from_dict(s) for name, s in run.pop("schemas").items()}
    config = from_dict(AttributeRunConfig, run)
    config.model.trunk.checkpoint = ""  # the weights come from this checkpoint, not the starting point
    return config, schemas


def _network(config: AttributeRunConfig, schemas: dict[str, LabelSchema], weights: dict) -> AttributeModel:
    tasks = {name: entry.learned_tasks() for name, entry in config.datasets.items()}
    model = build_attribute_model(config.model, schemas, tasks)
    model.load_state_dict(weights)
    return model


def ensemble_from(config: AttributeRunConfig, schemas: dict[str, LabelSchema], members: list[dict],
                   use_ema: bool) -> AttributeEnsemble:
    # An ensemble checkpoint keeps each member's {"modules": weights, "ema": weights or None}.
    return AttributeEnsemble([
        _network(config, schemas, module_weights({"modules": {"model": m["modules"]}, "ema": {"model": m.get("ema")}},
                                                 "model", use_ema)[0])
        for m in members
    ]).eval()
