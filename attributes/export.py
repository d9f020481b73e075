"""`facegan export` of an attribute model (one network or an ensemble): aligned faces in, every
head's raw outputs out, in ONNX, with SA-softmax's confidence beside each SA head.

Outputs are named "<dataset>/<group>" (group: "binary" for a dataset's binary attributes, else
the task's name) and hold what `attributes predict` decodes: binary logits (B, T), or with
SA-softmax (B, T*3) = per task [no, yes, unrecognizable]; class logits (B, N), N+1 with SA;
age in years (B, 1) or DEX bin logits. An SA head adds "<dataset>/<group>/confidence",
1 - P(unrecognizable), which the grades S-D are read from. The metadata lists each output with
its tasks, classes and decoding, the label schemas, the grade bounds, the calibrated decision
thresholds, and how faces are prepared (template, size, value range).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from attributes.heads import TaskGroup, decode_group
from attributes.inference import load_attribute_model, threshold_key, to_model_input
from attributes.model import AttributeEnsemble, AttributeModel
from attributes.sa_softmax import GRADE_LOWER_BOUNDS, GRADES
from data_prep.align.templates import template_metadata
from data_prep.datasets.schema import TaskKind
from data_prep.synthetic import render_faces
from engine.onnx_export import ExportCheck, base_metadata, export_onnx

__all__ = ["AttributesForExport", "export_attributes", "output_names"]


def output_names(groups: dict[str, list[TaskGroup]]) -> list[str]:
    """The exported outputs' names, in order."""
    names = []
    for dataset, dataset_groups in groups.items():
        for group in dataset_groups:
            names.append(f"{dataset}/{group.name}")
            if group.sa:
                names.append(f"{dataset}/{group.name}/confidence")
    return names


class AttributesForExport(nn.Module):
    """Every dataset's heads on one pass of each member's trunk, averaged over the members as
    `AttributeEnsemble` does; a flat tuple in `output_names` order."""

    def __init__(self, model: AttributeModel | AttributeEnsemble):
        super().__init__()
        self.members = nn.ModuleList(model.members if isinstance(model, AttributeEnsemble) else [model])
        self.groups = model.groups

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        plan = [(dataset, group) for dataset, groups in self.groups.items() for group in groups]
        subnets = sorted({group.subnet for _, group in plan})
        per_member = []
        for member in self.members:
            features = member.trunk(images)
            computed = {subnet: member.head_module(subnet)(features) for subnet in subnets}
            per_member.append([computed[group.subnet][group.name] for _, group in plan])
        outputs: list[torch.Tensor] = []
        for k, (_, group) in enumerate(plan):
            raw = torch.stack([member[k] for member in per_member]).mean(0).float()
            outputs.append(raw)
            if group.sa:
                outputs.append(decode_group(group, raw)["confidence"])
        return tuple(outputs)


def _describe(dataset: str, group: TaskGroup, thresholds: dict) -> dict:
    entry = {"output": f"{dataset}/{group.name}", "dataset": dataset, "group": group.name, "kind": group.kind.value,
             "tasks": [t.name for t in group.tasks], "sa": group.sa}
    if group.kind is TaskKind.BINARY:
        entry["decode"] = ("softmax over each task's [no, yes, unrecognizable] triple (outputs 3t..3t+2); P(yes) from "
                           "the first two" if group.sa else "sigmoid: P(yes) per task")
        key = threshold_key(dataset, group.name)
        if key in thresholds:  # calibrated on validation faces; 0.5 otherwise
            entry["thresholds"] = [round(float(v), 6) for v in thresholds[key]]
    elif group.kind is TaskKind.REGRESSION:
        entry["value_range"] = list(group.value_range) if group.value_range else None
        entry["decode"] = (f"softmax over {group.bins} one-year bins from {group.value_range[0]}; the expectation"
                           if group.bins else "the value itself, in the task's units")
    else:
        entry["classes"] = list(group.tasks[0].classes)
        entry["decode"] = ("softmax over the first N outputs (the last is unrecognizable)" if group.sa
                           else "softmax over the N class logits")
    if group.sa:
        entry["confidence_output"] = f"{dataset}/{group.name}/confidence"
    return entry


def sample_faces(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """`n` built-in synthetic faces at the model's input size, prepared as for the model."""
    faces = render_faces(n, seed=seed, size=size).image_tensor()
    return to_model_input(faces)


def export_attributes(checkpoint: str | Path, out: str | Path, batch: int = 8, seed: int = 0, use_ema: bool = True,
                      time_seconds: float = 0.0) -> ExportCheck:
    """Write an `attributes train` checkpoint (a network or an ensemble) to `out` (ONNX), checked
    on `batch` synthetic faces."""
    loaded = load_attribute_model(checkpoint, use_ema=use_ema)
    model = loaded.model
    members = model.members if isinstance(model, AttributeEnsemble) else [model]
    thresholds = loaded.thresholds
    templates = {name: template_metadata(entry.template, model.input_size) if entry.align else None
                 for name, entry in loaded.config.datasets.items()}
    metadata = {
        **base_metadata("attribute-model", checkpoint, loaded.step, use_ema),
        "members": len(members),
        "input": "images",
        "input_size": model.input_size,
        "channels": 3,
        "value_range": [-1.0, 1.0],
        "preprocessing": "RGB uint8 face aligned on the template at input_size, then x / 127.5 - 1",
        "templates": templates,
        # `attributes predict` averages the raw outputs of each face and its mirror image when the
        # run says so; the graph holds one pass, so a deployment runs it on both and averages.
        "flip_tta": bool(loaded.config.eval.flip_tta),
        "heads": [_describe(d, g, thresholds) for d, groups in model.groups.items() for g in groups],
        "outputs": output_names(model.groups),
        "schemas": {name: schema.to_dict() for name, schema in model.schemas.items()},
        "grades": {"letters": list(GRADES), "lower_bounds": list(GRADE_LOWER_BOUNDS),
                   "from": "an SA head's confidence output: the best grade whose lower bound it reaches"},
    }
    inputs = sample_faces(batch, model.input_size, seed)
    return export_onnx(AttributesForExport(model), inputs, out, output_names(model.groups), metadata,
                       time_seconds=time_seconds)
