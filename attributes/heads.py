"""Heads built from data_prep label schemas, and what their outputs mean.

Every dataset gets its own sub-network on the shared trunk's feature map (Yu 2017, sec. 3.5):
3x3 conv -> 1x1 conv -> fc_feature -> one output layer per task group. A task group is
- all binary attributes of the dataset together (one linear layer, T outputs, or 3T with
  SA-softmax: "no", "yes" and "unrecognizable" for each attribute);
- each categorical / ordinal task (N outputs, N+1 with SA-softmax);
- each regression task (age): 1 output in years (`age_mode: regression`, L1 loss), or one logit
  per integer bin of its value range (`age_mode: dex`, cross-entropy; the prediction is the
  expectation over bins, as in DEX).
A task named in `share_tasks` is instead served, for every dataset that has it, by one shared
sub-network of its own (`shared:<task>`): gender from CelebA's `Male`, UTKFace and LFW then
trains one classifier.

`decode` turns raw outputs into predictions, class probabilities and two confidences: the
max-softmax one (any head) and SA-softmax's 1 - p(unrecognizable) (SA heads only).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from data_prep.datasets.schema import LabelSchema, Task, TaskKind

__all__ = ["HeadConfig", "TaskGroup", "HeadSubnet", "plan_groups", "decode_group", "group_loss"]


@dataclass
class HeadConfig:
    conv_channels: int = 128  # the 3x3 conv
    reduce_channels: int = 64  # the 1x1 conv
    feature_dim: int = 256  # fc_feature
    dropout: float = 0.3
    age_mode: str = "regression"  # regression (L1 in years) | dex (expectation over 1-year bins)
    pos_weight: bool = False  # class-balanced BCE for binary attributes (weight (1-p)/p on positives)
    share_tasks: list[str] = field(default_factory=list)  # task names whose head is shared by every dataset that has it
    sa_softmax: bool = False  # N+1 outputs with the "unrecognizable" class (binary and categorical tasks)


@dataclass
class TaskGroup:
    """Outputs of one linear layer and the tasks (with their target columns) they serve."""

    name: str  # "binary" or a task name
    kind: TaskKind
    tasks: list[Task]
    columns: list[int]  # each task's column in the dataset's targets tensor
    sa: bool = False
    bins: int = 0  # DEX bins (regression with age_mode dex)
    value_range: tuple[float, float] | None = None
    subnet: str = ""  # name of the sub-network that computes it
    pos_weight: torch.Tensor | None = None

    @property
    def num_outputs(self) -> int:
        if self.kind is TaskKind.BINARY:
            return len(self.tasks) * (3 if self.sa else 1)
        if self.kind is TaskKind.REGRESSION:
            return self.bins if self.bins else 1
        return len(self.tasks[0].classes) + (1 if self.sa else 0)

    @property
    def num_classes(self) -> int:
        """Real classes per task (2 for binary), not counting "unrecognizable"."""
        if self.kind is TaskKind.BINARY:
            return 2
        if self.kind is TaskKind.REGRESSION:
            return 0
        return len(self.tasks[0].classes)


def plan_groups(dataset: str, schema: LabelSchema, config: HeadConfig, tasks: list[str] | None = None) -> list[TaskGroup]:
    """The task groups of one dataset, in schema order (binary attributes first)."""
    chosen = [t for t in schema if tasks is None or not tasks or t.name in tasks]
    if tasks:
        unknown = set(tasks) - {t.name for t in schema}
        if unknown:
            raise ValueError(f"{dataset}: tasks {sorted(unknown)} are not in its schema {schema.names}")
    groups: list[TaskGroup] = []
    binary = [t for t in chosen if t.kind is TaskKind.BINARY and t.name not in config.share_tasks]
    if binary:
        groups.append(TaskGroup("binary", TaskKind.BINARY, binary, [schema.names.index(t.name) for t in binary],
                                sa=config.sa_softmax, subnet=dataset))
    for task in chosen:
        column = schema.names.index(task.name)
        subnet = f"shared:{task.name}" if task.name in config.share_tasks else dataset
        if task.kind is TaskKind.BINARY:
            if task.name in config.share_tasks:
                groups.append(TaskGroup(task.name, task.kind, [task], [column], sa=config.sa_softmax, subnet=subnet))
            continue
        if task.kind is TaskKind.REGRESSION:
            bins, value_range = 0, task.value_range or (0.0, 100.0)
            if config.age_mode == "dex":
                bins = int(value_range[1] - value_range[0]) + 1
            elif config.age_mode != "regression":
                raise ValueError(f"age_mode must be 'regression' or 'dex', not {config.age_mode!r}")
            groups.append(TaskGroup(task.name, task.kind, [task], [column], bins=bins, value_range=value_range, subnet=subnet))
        else:
            groups.append(TaskGroup(task.name, task.kind, [task], [column], sa=config.sa_softmax, subnet=subnet))
    return groups


class HeadSubnet(nn.Module):
    """3x3 conv -> 1x1 conv -> fc_feature, then one linear output layer per task group."""

    def __init__(self, in_channels: int, spatial: tuple[int, int], config: HeadConfig, outputs: dict[str, int]):
        super().__init__()
        c1, c2 = config.conv_channels, config.reduce_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
        )
        self.fc_feature = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * spatial[0] * spatial[1], config.feature_dim), nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
        )
        self.outputs = nn.ModuleDict({name: nn.Linear(config.feature_dim, n) for name, n in outputs.items()})

    def forward(self, features: torch.Tensor, return_embedding: bool = False):
        """Outputs per group; with `return_embedding`, also the fc_feature vector before dropout,
        which the feature-space losses (center, contrastive-center) act on."""
        flatten, linear, relu, dropout = self.fc_feature  # kept one Sequential: checkpoint keys unchanged
        embedding = relu(linear(flatten(self.conv(features))))
        hidden = dropout(embedding)
        outputs = {name: layer(hidden) for name, layer in self.outputs.items()}
        return (outputs, embedding) if return_embedding else outputs


def _binary_logits(group: TaskGroup, out: torch.Tensor) -> torch.Tensor:
    return out.view(out.shape[0], len(group.tasks), 3) if group.sa else out


def group_loss(
    group: TaskGroup,
    out: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    sa_targets: torch.Tensor | None = None,
    sa_active: bool = False,
    smoothing: float = 0.0,
    gamblers_reward: float = 0.0,
) -> torch.Tensor | None:
    """Mean loss of one group over the labelled entries of the batch (None when none are).

    `targets`/`mask` are the group's columns, (B, T). `sa_targets` are SA-softmax's current
    labels (B, T) (-1 = no label), used once SA is active; before that an SA head trains as a
    plain softmax over its N real classes. `smoothing` is label smoothing for the plain binary
    and class heads (targets 1 - s/2 and s/2 for a binary attribute; cross-entropy's own for
    classes and DEX bins); SA heads and L1 regression ignore it. `gamblers_reward` > 0 trains an
    active SA head with the gamblers' loss on the true labels instead of `sa_targets`.
    """
    if not mask.any():
        return None
    if group.sa:
        from attributes.sa_softmax import gamblers_loss, sa_cross_entropy

        logits = _binary_logits(group, out) if group.kind is TaskKind.BINARY else out.unsqueeze(1)
        labels = torch.where(mask, targets.round().long(), torch.full_like(targets, -1, dtype=torch.long))
        gamblers = sa_active and gamblers_reward > 0
        if sa_active and sa_targets is not None and not gamblers:
            labels = sa_targets
        if not (labels >= 0).any():
            return None
        if gamblers:
            return gamblers_loss(logits, labels, group.num_classes, gamblers_reward)
        return sa_cross_entropy(logits, labels, group.num_classes, sa_active=sa_active)
    if group.kind is TaskKind.BINARY:
        pos_weight = None if group.pos_weight is None else group.pos_weight.to(out.device)
        if smoothing:
            targets = targets * (1.0 - smoothing) + 0.5 * smoothing
        loss = F.binary_cross_entropy_with_logits(out, targets, reduction="none", pos_weight=pos_weight)
        return loss[mask].mean()
    if group.kind is TaskKind.REGRESSION:
        valid = mask[:, 0]
        y = targets[valid, 0]
        if group.bins:
            low = group.value_range[0]
            bins = (y - low).round().long().clamp(0, group.bins - 1)
            return F.cross_entropy(out[valid], bins, label_smoothing=smoothing)
        return (out[valid, 0] - y).abs().mean() / 10.0  # in decades: keeps it on the scale of a cross-entropy
    valid = mask[:, 0]
    return F.cross_entropy(out[valid], targets[valid, 0].round().long(), label_smoothing=smoothing)


@torch.no_grad()
def decode_group(group: TaskGroup, out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Predictions of one group.

    binary: `prob` (B, T) P(yes); `pred` (B, T) 0/1; `max_softmax` (B, T).
    categorical: `probs` (B, N); `pred` (B,); `max_softmax` (B,).
    regression: `value` (B,) in the task's units.
    SA heads add `confidence` = 1 - p(unrecognizable) of the softmax over all N+1 outputs;
    their class probabilities come from the softmax over the first N outputs.
    """
    out = out.float()
    if group.kind is TaskKind.REGRESSION:
        if group.bins:
            probs = out.softmax(-1)
            ages = torch.arange(group.bins, dtype=probs.dtype, device=probs.device) + group.value_range[0]
            return {"value": (probs * ages).sum(-1)}
        return {"value": out[:, 0]}
    if group.kind is TaskKind.BINARY:
        if group.sa:
            logits = _binary_logits(group, out)
            probs = logits[..., :2].softmax(-1)
            result = {"prob": probs[..., 1], "confidence": 1 - logits.softmax(-1)[..., 2]}
        else:
            p = out.sigmoid()
            probs = torch.stack([1 - p, p], -1)
            result = {"prob": p}
        result["pred"] = (result["prob"] >= 0.5).long()
        result["max_softmax"] = probs.max(-1).values
        return result
    n = group.num_classes
    probs = out[:, :n].softmax(-1)
    result = {"probs": probs, "pred": probs.argmax(-1), "max_softmax": probs.max(-1).values}
    if group.sa:
        result["confidence"] = 1 - out.softmax(-1)[:, n]
    return result
