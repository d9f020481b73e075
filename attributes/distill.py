"""Knowledge distillation (Hinton et al., 2015): a smaller student learns from a trained teacher's
outputs on every head, beside its own labels.

Per head group, on the same augmented faces the student sees (the teacher runs frozen, in eval mode):
- binary attributes (sigmoid): KL between the teacher's and the student's Bernoulli
  distributions, both softened at temperature T (logits / T);
- categorical tasks: KL(teacher || student) of the softmax at temperature T;
- SA-softmax heads: the same KL over all N+1 outputs (each binary attribute's 3, or N+1), so the
  student also learns when the teacher calls a face unrecognizable;
- regression (age): L2 between the student's and the teacher's predicted value, in decades (the
  scale of the L1 label loss); with DEX bins, the values are the expectations over the bins.
The KL terms are multiplied by T^2, which keeps their gradients on the scale of the label loss;
the sum is added to the label loss with `distill.weight`. Distillation uses every face of the
batch, labelled or not.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attributes.heads import TaskGroup, decode_group
from attributes.step import AttributeStep
from data_prep.datasets.schema import TaskKind
from engine.errors import FaceganError

__all__ = ["DistillConfig", "distillation_loss", "DistillStep"]

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    teacher: str = ""  # a checkpoint of `attributes train` with the same datasets and tasks; empty: no distillation
    temperature: float = 4.0  # T: softens both distributions
    weight: float = 1.0  # the distillation term's weight beside the label loss


def distillation_loss(group: TaskGroup, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """The soft-target loss of one head group over a batch (see the module docstring)."""
    t = float(temperature)
    if group.kind is TaskKind.REGRESSION:
        if group.bins:  # the expectation over DEX bins, with gradients (decode_group has none)
            ages = torch.arange(group.bins, dtype=student.dtype, device=student.device) + group.value_range[0]
            s_value = (student.softmax(-1) * ages).sum(-1)
        else:
            s_value = student[:, 0]
        t_value = decode_group(group, teacher)["value"]
        return ((s_value - t_value) / 10.0).pow(2).mean()
    if group.kind is TaskKind.BINARY and not group.sa:
        # KL(Bernoulli(p_t) || Bernoulli(p_s)) at temperature T, as a two-class softmax
        s_logits = torch.stack([torch.zeros_like(student), student], -1) / t
        t_logits = torch.stack([torch.zeros_like(teacher), teacher], -1) / t
    elif group.kind is TaskKind.BINARY:
        s_logits = student.view(student.shape[0], len(group.tasks), 3) / t
        t_logits = teacher.view(teacher.shape[0], len(group.tasks), 3) / t
    else:
        s_logits, t_logits = student.unsqueeze(1) / t, teacher.unsqueeze(1) / t
    kl = F.kl_div(s_logits.log_softmax(-1), t_logits.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return kl.mean() * t * t


class DistillStep(AttributeStep):
    """An `AttributeStep` whose loss also pulls every head toward a frozen teacher's outputs."""

    def __init__(self, *args, teacher, distill: DistillConfig, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.names:
            if name not in teacher.groups:
                raise FaceganError(f"the teacher has no head for dataset {name!r}; it has {list(teacher.groups)}")
            mine = [(g.name, g.num_outputs) for g in self.model.groups[name]]
            theirs = {g.name: g.num_outputs for g in teacher.groups[name]}
            missing = [g for g, n in mine if theirs.get(g) != n]
            if missing:
                raise FaceganError(f"the teacher's {name!r} head does not match the student's groups {missing}")
        if distill.temperature <= 0:
            raise FaceganError("distill.temperature must be positive")
        self.teacher = teacher.eval().requires_grad_(False)
        self.distill_config = distill

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.teacher.to(ctx.device)

    def auxiliary_losses(self, features, layout, unlabelled, step, images=None, outputs=None):
        terms = super().auxiliary_losses(features, layout, unlabelled, step, images=images, outputs=outputs)
        labelled = sum(count for _, count in layout)
        with torch.no_grad():
            teacher_outputs, _ = self.teacher(images[:labelled], layout)
        total = None
        for name, _ in layout:
            for group in self.model.groups[name]:
                loss = distillation_loss(group, outputs[name][group.name].float(), teacher_outputs[name][group.name].float(),
                                         self.distill_config.temperature)
                total = loss if total is None else total + loss
        if total is not None:
            terms["distill"] = self.distill_config.weight * total
        return terms
