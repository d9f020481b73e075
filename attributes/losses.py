"""Joint-supervision losses (Zhao 2020; Tong 2024): terms added, with a weight, to a head's softmax or BCE loss.

Feature-space losses, for single-label heads (identity and categorical tasks), on the head's
fc_feature output x_i (before dropout) with label y_i and learned class centres c_j:
- center loss (Wen et al., ECCV 2016): 1/2 ||x_i - c_{y_i}||^2. Its centres follow Wen's own
  update rule, at their own rate alpha, rather than the optimizer (`update_centers`);
- contrastive-center loss (Qi & Su 2017; Tong 2024, eq. 7):
  1/2 ||x_i - c_{y_i}||^2 / (sum_{j != y_i} ||x_i - c_j||^2 + delta), delta = 1. Its centres are
  trained by gradient descent with the network, as the seed says;
- exclusive regularisation (Zhao 2020, ch. 4, eq. 4.16), on the classifier's weight rows W_n:
  mean over classes n of max_{m != n} cos(W_n, W_m). It pushes every class's weight away from
  its nearest neighbour, so features of different classes spread apart.

For binary attributes:
- relaxed F-measure loss (Zhao 2020, ch. 3, eqs. 3.10-3.14): with probabilities p_i and labels
  y_i, TP = sum p y, FP = sum p (1 - y), FN = sum (1 - p) y, and
  F = (1 + b2) TP / (b2 (TP + FN) + TP + FP), b2 = beta^2 = 0.3; the loss is 1 - F ("floss") or
  -log F ("logfloss"), computed per attribute over the batch, then averaged over attributes.

The seed writes the contrastive-center loss as a sum over the mini-batch; here every per-sample
term is averaged over the batch (`reduction="mean"`), so that its weight does not depend on the
batch size. `reduction="sum"` gives the seed's formula as printed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attributes.heads import TaskGroup, decode_group
from data_prep.datasets.schema import TaskKind

__all__ = ["center_loss", "contrastive_center_loss", "exclusive_regularization", "relaxed_f_measure",
           "f_measure_loss", "update_centers", "FeatureCenters", "F_MEASURE_VARIANTS", "distillation_loss"]

F_MEASURE_VARIANTS = ("floss", "logfloss")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")


def center_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
    """1/2 ||x_i - c_{y_i}||^2 per sample. features (B, D), labels (B,) long, centers (C, D)."""
    return _reduce(0.5 * (features - centers[labels]).pow(2).sum(1), reduction)


def contrastive_center_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor,
                            delta: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """1/2 ||x_i - c_{y_i}||^2 / (sum_{j != y_i} ||x_i - c_j||^2 + delta) per sample (Tong 2024, eq. 7)."""
    # squared differences, not cdist: cdist's gradient is undefined at zero distance
    distances = (features.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(-1)
    own = distances.gather(1, labels.view(-1, 1)).squeeze(1)
    others = distances.sum(1) - own
    return _reduce(0.5 * own / (others + delta), reduction)


def exclusive_regularization(weight: torch.Tensor) -> torch.Tensor:
    """mean_n max_{m != n} cos(W_n, W_m) over the rows of a classifier's weight (classes x features)."""
    if weight.shape[0] < 2:
        raise ValueError("exclusive regularisation needs at least two classes")
    unit = F.normalize(weight, dim=1)
    cosine = unit @ unit.t()
    eye = torch.eye(weight.shape[0], dtype=torch.bool, device=weight.device)
    return cosine.masked_fill(eye, float("-inf")).max(1).values.mean()


def relaxed_f_measure(probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                      beta2: float = 0.3, eps: float = 1e-7) -> torch.Tensor:
    """The relaxed F-measure of each attribute (column) over the batch, from probabilities.

    probs, targets (B, T); entries where `mask` is False do not count. Returns (T,). An attribute
    with neither labelled positives nor predicted mass has TP = H = 0 and F = 0, with zero gradient.
    """
    if mask is None:
        mask = torch.ones_like(targets, dtype=torch.bool)
    m = mask.to(probs.dtype)
    p, y = probs * m, targets.to(probs.dtype) * m
    tp = (p * y).sum(0)
    fp = (p * (1 - y)).sum(0)
    fn = ((1 - p) * y).sum(0)
    h = beta2 * (tp + fn) + tp + fp
    return (1 + beta2) * tp / (h + eps)


def f_measure_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                   beta2: float = 0.3, variant: str = "floss") -> torch.Tensor:
    """1 - F ("floss") or -log F ("logfloss") of each attribute, averaged over the attributes that
    have a labelled entry in the batch. logits (B, T) of a sigmoid head."""
    if variant not in F_MEASURE_VARIANTS:
        raise ValueError(f"F-measure loss variant must be one of {F_MEASURE_VARIANTS}, not {variant!r}")
    if mask is None:
        mask = torch.ones_like(targets, dtype=torch.bool)
    present = mask.any(0)
    if not present.any():
        return logits.sum() * 0.0
    f = relaxed_f_measure(logits.sigmoid(), targets, mask, beta2)[present]
    loss = 1 - f if variant == "floss" else -torch.log(f.clamp(min=1e-7))
    return loss.mean()


@torch.no_grad()
def update_centers(centers: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, alpha: float,
                   all_reduce=None) -> None:
    """Wen et al.'s centre update, in place: c_j -= alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j).
    `all_reduce` (torch.distributed's) sums the per-class statistics over ranks first, so that
    every replica moves its centres alike."""
    features = features.detach().to(centers.dtype)
    total = torch.zeros_like(centers).index_add_(0, labels, centers[labels] - features)
    counts = torch.zeros(centers.shape[0], dtype=centers.dtype, device=centers.device)
    counts.index_add_(0, labels, torch.ones_like(labels, dtype=centers.dtype))
    if all_reduce is not None:
        all_reduce(total)
        all_reduce(counts)
    centers -= alpha * total / (1 + counts).unsqueeze(1)

class FeatureCenters(nn.Module):
    """The class centres of single-label heads' embeddings, one set per head (`key`).

    Center loss keeps Wen et al.'s centres as buffers, moved by `update_centers` at rate alpha
    after each step; the contrastive-center loss's centres are parameters trained with the network.
    A shared head (one sub-network for several datasets) has one set of centres.
    """

    def __init__(self, shapes: dict[str, tuple[int, int]], center: bool, contrastive: bool, delta: float = 1.0):
        super().__init__()
        self.keys = list(shapes)
        self.use_center = center
        self.delta = delta
        # small random starts: identical contrastive centres would all receive the same gradient
        self.contrastive = nn.ParameterList(
            [nn.Parameter(torch.randn(classes, dim) * 0.01) for classes, dim in shapes.values()]
        ) if contrastive else None
        for index, (classes, dim) in enumerate(shapes.values()):
            if center:
                self.register_buffer(f"center_{index}", torch.zeros(classes, dim))

    def centers(self, key: str) -> torch.Tensor:
        return getattr(self, f"center_{self.keys.index(key)}")

    def forward(self, embeddings: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"<key>/center": ..., "<key>/contrastive_center": ...} for every head. A head with no
        labelled sample in the batch gives 0, still connected to its parameters, so that
        DistributedDataParallel sees every parameter used."""
        losses = {}
        for index, key in enumerate(self.keys):
            x, y = embeddings.get(key), labels.get(key)
            present = x is not None and x.shape[0] > 0
            if self.use_center:
                losses[f"{key}/center"] = (center_loss(x, y, self.centers(key)) if present
                                           else self.centers(key).new_zeros(()))
            if self.contrastive is not None:
                centers = self.contrastive[index]
                losses[f"{key}/contrastive_center"] = (contrastive_center_loss(x, y, centers, self.delta) if present
                                                       else centers.sum() * 0.0)
        return losses

    @torch.no_grad()
    def update(self, embeddings: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], alpha: float,
               all_reduce=None) -> None:
        """Wen's update of every head's centres from this step's embeddings (see `update_centers`)."""
        if not self.use_center:
            return
        for key in self.keys:
            centers = self.centers(key)
            x = embeddings.get(key, centers.new_zeros(0, centers.shape[1]))
            y = labels.get(key, torch.zeros(0, dtype=torch.long, device=centers.device))
            update_centers(centers, x, y, alpha, all_reduce)


# Knowledge distillation (Hinton et al. 2015; the per-head terms are described in attributes.distill).
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
