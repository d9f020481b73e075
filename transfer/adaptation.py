"""Label-free adaptation to a target domain, on the attribute trainer.

- **AdaBN** (Li et al., "Revisiting Batch Normalization For Practical Domain Adaptation", 2016):
  the trained model's BatchNorm statistics re-estimated on the target's faces; no gradient step.
- **TENT** (Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization", ICLR 2021):
  the entropy of the model's predictions on target faces minimised by Adam on the BatchNorm
  scales and shifts only, the normalisation using each target batch's statistics.
- **Self-training** with confidence-filtered pseudo-labels, as in FixMatch (Sohn et al., "FixMatch:
  Simplifying Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020): the model
  labels the target faces from a weak view (the face and its mirror image), keeps the labels it
  is confident of, and trains on a strong view (colour jitter, erasing) of those faces beside
  the labelled source faces; it labels them again every `relabel_every` steps. The confidence
  threshold is chosen on the SOURCE validation people: the lowest confidence at which a stated
  share of them is predicted right. Or, with an SA-softmax head (Yu 2017), the faces it grades S
  or A are kept: the thesis's own measure of which predictions to trust.

The target's faces reach these procedures only through `unlabelled_view`, which carries no
label, so no target label can steer them; the pseudo-labels' accuracy is measured afterwards by
the study, for its report.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from attributes.heads import TaskGroup
from attributes.inference import predict_cache, to_model_input
from attributes.model import AttributeModel
from attributes.multidataset import augment_batch
from attributes.sa_softmax import GRADE_LOWER_BOUNDS, GRADES, SATagState
from attributes.step import AttributeStep
from data_prep.datasets.schema import TaskKind
from data_prep.face_array import FaceArray
from engine.errors import FaceganError

__all__ = ["unlabelled_view", "batch_norms", "adapt_batch_norm", "entropy", "TentStep", "confidence_threshold",
           "pseudo_labels", "SelfTrainStep"]


class AdaptationError(FaceganError):
    """A model or face set that a label-free adaptation cannot work with."""


def unlabelled_view(faces: FaceArray, name: str = "") -> FaceArray:
    """The same pixels with every label removed (and no identities nor paths): what a label-free
    procedure may see of a target face set."""
    empty = torch.zeros(len(faces), len(faces.schema))
    return FaceArray(faces.images, empty, empty.bool(), faces.schema, name=name or f"{faces.name} (no labels)")


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _equal_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Positions 0..n-1 in batches of at most `batch_size` and nearly equal sizes (a last batch of
    one face would fail in BatchNorm1d's training mode and weigh as much as a full one)."""
    return [chunk for chunk in np.array_split(np.arange(n), max(1, math.ceil(n / batch_size))) if len(chunk)]


@torch.no_grad()
def adapt_batch_norm(model: AttributeModel, faces: FaceArray, head: str, batch_size: int = 256,
                     device: torch.device | str = "cpu") -> int:
    """Replace every BatchNorm layer's running statistics by their average over `faces` (passed
    through the head of dataset `head`, so that head's normalisation is re-estimated as well).
    The weights do not change. Returns the number of layers re-estimated."""
    norms = batch_norms(model)
    if not norms:
        raise AdaptationError("AdaBN needs a model with BatchNorm layers; this one has none")
    if len(faces) < 2:
        raise AdaptationError(f"AdaBN needs at least 2 faces to estimate statistics; {faces.name!r} has {len(faces)}")
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
        m.train()
    try:
        for rows in _equal_batches(len(faces), batch_size):
            images = to_model_input(faces.get_batch(rows).to(device))
            model(images, [(head, len(rows))])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return len(norms)


def entropy(group: TaskGroup, out: torch.Tensor) -> torch.Tensor | None:
    """Mean entropy (nats) of one plain head's predictions; None for a head it does not apply to."""
    out = out.float()
    if group.sa or group.kind is TaskKind.REGRESSION:
        return None
    if group.kind is TaskKind.BINARY:
        p = out.sigmoid()
        return -(p * nn.functional.logsigmoid(out) + (1 - p) * nn.functional.logsigmoid(-out)).mean()
    log_p = out[:, :group.num_classes].log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def _single_target(step: AttributeStep, head: str) -> str:
    if len(step.unlabelled) != 1:
        raise AdaptationError(f"a label-free adaptation takes exactly one unlabelled target face set, got {step.unlabelled}")
    if head not in step.model.groups:
        raise AdaptationError(f"no head {head!r} in the model; it has {sorted(step.model.groups)}")
    return step.unlabelled[0]


class TentStep(AttributeStep):
    """TENT's step: entropy of the head `head` on a batch of unlabelled target faces, minimised
    over the BatchNorm scales and shifts (every other weight frozen). The labelled batches the
    trainer also draws are not used."""

    def __init__(self, *args, head: str, lr: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.target = _single_target(self, head)
        self.head = head
        self.tent_lr = lr
        affine = [p for m in batch_norms(self.model) if m.affine for p in (m.weight, m.bias)]
        if not affine:
            raise AdaptationError("TENT needs BatchNorm layers with scales and shifts; this model has none")
        self.model.requires_grad_(False)
        for p in affine:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(affine, lr=lr)

    def train_step(self, batch: dict[str, dict[str, torch.Tensor]], step: int) -> dict[str, float]:
        ctx = self.ctx
        images = to_model_input(batch[self.target]["image"])  # as tested: no augmentation
        self.model.train()
        for m in self.model.modules():
            if isinstance(m, nn.Dropout):
                m.eval()  # TENT adapts the normalisation, not a dropout-noised model
        with ctx.autocast():
            outputs, _ = ctx.models["model"](images, [(self.head, images.shape[0])])
        terms = {group.name: entropy(group, outputs[self.head][group.name]) for group in self.model.groups[self.head]}
        terms = {name: value for name, value in terms.items() if value is not None}
        if not terms:
            raise AdaptationError(f"head {self.head!r} has no binary or categorical plain-softmax task to adapt")
        loss = torch.stack(list(terms.values())).mean()
        grad_norm = ctx.optimize("model", loss)
        return {"loss": float(loss.detach()), "lr": self.tent_lr, "grad_norm": grad_norm,
                **{f"entropy/{name}": float(value.detach()) for name, value in terms.items()}}


# ------------------------------------------------------------------------------------------
# Self-training
# ------------------------------------------------------------------------------------------
def confidence_threshold(confidence: torch.Tensor, correct: torch.Tensor, precision: float, min_faces: int = 20) -> float:
    """The lowest confidence c such that the faces at or above c are right at least `precision`
    of the time (counting at least `min_faces` of them); above every confidence (nothing kept)
    when no such c exists."""
    if confidence.numel() == 0:
        return math.inf
    order = confidence.argsort(descending=True)
    conf, right = confidence[order], correct[order].float()
    accuracy = right.cumsum(0) / torch.arange(1, len(right) + 1)
    # A cut is only possible after the last face of a run of equal confidences.
    last_of_tie = torch.cat([conf[1:] < conf[:-1], torch.tensor([True])])
    ok = (accuracy >= precision) & last_of_tie & (torch.arange(1, len(right) + 1) >= min(min_faces, len(right)))
    if not ok.any():
        return math.inf
    return float(conf[int(torch.nonzero(ok).max())])


# The lowest confidence of grade A: "S or A" is a confidence at or above it.
SA_KEEP_FROM = GRADE_LOWER_BOUNDS[GRADES.index("A")]


def _task_predictions(model: AttributeModel, faces: FaceArray, head: str, device,
                      selection: str = "max_softmax") -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """(label, confidence) per target column of every binary or categorical task, from the face
    and its mirror image: max-softmax, or with `selection="sa_grade"` an SA head's confidence."""
    decoded = predict_cache(model, faces, head, batch_size=256, device=device, flip_tta=True)
    result: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for group in model.groups[head]:
        if group.kind is TaskKind.REGRESSION or group.sa != (selection == "sa_grade"):
            continue
        d = decoded[group.name]
        key = "confidence" if group.sa else "max_softmax"
        if group.kind is TaskKind.BINARY:
            pred = d["pred"].reshape(len(faces), -1)
            conf = d[key].reshape(len(faces), -1)
            for k, column in enumerate(group.columns):
                result[column] = (pred[:, k].float(), conf[:, k])
        else:
            result[group.columns[0]] = (d["pred"].float(), d[key])
    return result


def class_balanced_keep(label: torch.Tensor, confidence: torch.Tensor, share: float) -> torch.Tensor:
    """The faces to keep when every predicted class gives up the same `share` of its faces, its
    most confident ones (class-balanced self-training, Zou et al., ECCV 2018): a class the model
    is sure of cannot crowd out the others, which is how self-training collapses to one class."""
    keep = torch.zeros(len(label), dtype=torch.bool)
    for value in label.unique():
        rows = torch.nonzero(label == value).flatten()
        count = int(round(share * len(rows)))
        if count:
            keep[rows[confidence[rows].argsort(descending=True, stable=True)[:count]]] = True
    return keep


def pseudo_labels(model: AttributeModel, head: str, target: FaceArray, source_val: FaceArray, precision: float,
                  device: torch.device | str = "cpu", selection: str = "max_softmax", balance_classes: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(targets, mask, thresholds): the model's labels of the `target` faces, kept (mask) where its
    max-softmax reaches the threshold chosen on the labelled `source_val` faces for `precision`,
    or with `selection="sa_grade"` where its SA head grades them S or A. `balance_classes`: the
    threshold only sets how many faces a column keeps; each predicted class then gives that share
    of its own faces (`class_balanced_keep`)."""
    if selection not in ("max_softmax", "sa_grade"):
        raise AdaptationError(f"pseudo-labels are selected by max_softmax or sa_grade, not {selection!r}")
    if balance_classes and selection != "max_softmax":
        raise AdaptationError("class-balanced selection ranks max-softmax confidences; SA grades are not balanced")
    if selection == "sa_grade":
        on_target = _task_predictions(model, target, head, device, selection)
        if not on_target:
            raise AdaptationError(f"selection by SA grade needs an SA-softmax head; {head!r} has none")
        return _kept(target, on_target, {column: SA_KEEP_FROM for column in on_target})
    if len(source_val) == 0:
        raise AdaptationError("self-training chooses its confidence threshold on source validation faces, and there are "
                              "none: give the source domain a val_fraction above 0")
    val = _task_predictions(model, source_val, head, device)
    on_target = _task_predictions(model, target, head, device)
    thresholds = {}
    for column in on_target:
        known = source_val.mask[:, column]
        val_label, val_conf = val[column]
        correct = val_label[known] == source_val.targets[known, column].round()
        thresholds[column] = confidence_threshold(val_conf[known], correct, precision)
    targets, mask, named = _kept(target, on_target, thresholds)
    if balance_classes:
        for column, (label, conf) in on_target.items():
            mask[:, column] = class_balanced_keep(label, conf, float(mask[:, column].float().mean()))
    return targets, mask, named


def _kept(target: FaceArray, on_target: dict[int, tuple[torch.Tensor, torch.Tensor]], thresholds: dict[int, float]
          ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    targets = torch.zeros(len(target), len(target.schema))
    mask = torch.zeros(len(target), len(target.schema), dtype=torch.bool)
    for column, (label, conf) in on_target.items():
        targets[:, column] = label
        mask[:, column] = conf >= thresholds[column]
    return targets, mask, {target.schema.names[c]: t for c, t in thresholds.items()}


def _columns(schema) -> list[tuple]:
    """What a target column means to a head: its task's name, kind and classes (two datasets
    describe the same task in their own words)."""
    return [(task.name, task.kind, tuple(task.classes)) for task in schema]


class SelfTrainStep(AttributeStep):
    """The attribute step on the labelled source batch plus the pseudo-labelled faces of an
    unlabelled target batch, whose labels come from the model being trained (its EMA copy when the
    trainer keeps one) every `relabel_every` steps. `label_faces`: the same target faces, face for
    face, as the model labels them (say, in the colours it was trained in), when it is to learn
    them as `target_faces` show them."""

    def __init__(self, *args, head: str, target_faces: FaceArray, source_val: FaceArray, relabel_every: int,
                 precision: float, strong_color: float = 0.4, strong_erase: float = 0.5, selection: str = "max_softmax",
                 balance_classes: bool = False, label_faces: FaceArray | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.target = _single_target(self, head)
        self.unlabelled = []  # the target batch joins the source head's slice once it has labels
        self.head = head
        self.target_faces = target_faces
        if self.train_sets[self.target].mask.any():
            raise AdaptationError("self-training was handed target faces with labels; it takes an unlabelled_view")
        if _columns(target_faces.schema) != _columns(self.train_sets[head].schema):
            raise AdaptationError(f"the target's tasks {_columns(target_faces.schema)} differ from the source head's "
                                  f"{_columns(self.train_sets[head].schema)}")
        self.label_faces = target_faces if label_faces is None else label_faces
        if len(self.label_faces) != len(target_faces) or self.label_faces.mask.any():
            raise AdaptationError(f"the faces to label ({len(self.label_faces)}) must be the {len(target_faces)} target "
                                  "faces themselves, without labels")
        self.source_val = source_val
        self.relabel_every = relabel_every
        self.precision = precision
        self.selection = selection
        self.balance_classes = balance_classes
        # An SA head keeps dynamic tags per training face: the target faces get rows after the
        # source's (their `index` in the merged batch), labelled by each round's pseudo-labels.
        self.n_source = len(self.train_sets[head])
        for key, state in self.sa_states.items():
            if key.startswith(f"{head}/"):
                empty = torch.zeros(len(target_faces), state.num_tasks, dtype=torch.long)
                self.sa_states[key] = SATagState(
                    self.n_source + len(target_faces), state.num_tasks, state.num_classes,
                    torch.cat([state.true.long().clamp(min=0), empty]), torch.cat([state.valid, empty.bool()]),
                    threshold=state.threshold)
        self.strong_color = strong_color
        self.strong_erase = strong_erase
        self.pseudo_targets = torch.zeros(len(target_faces), len(target_faces.schema))
        self.pseudo_mask = torch.zeros(len(target_faces), len(target_faces.schema), dtype=torch.bool)
        self.rounds: list[dict[str, Any]] = []

    def relabel(self, step: int) -> None:
        model = self.ctx.ema.get("model", self.model)
        targets, mask, thresholds = pseudo_labels(model, self.head, self.label_faces, self.source_val, self.precision,
                                                  self.ctx.device, self.selection, self.balance_classes)
        self._use(targets, mask)
        self.rounds.append({"step": step, "thresholds": thresholds, "targets": targets.clone(), "mask": mask.clone()})

    def _use(self, targets: torch.Tensor, mask: torch.Tensor) -> None:
        """Train on these pseudo-labels from now on; an SA head's tags of the target rows start
        again from them."""
        self.pseudo_targets, self.pseudo_mask = targets, mask
        rows = slice(self.n_source, None)
        for key, state in self.sa_states.items():
            if not key.startswith(f"{self.head}/"):
                continue
            group = next(g for g in self.model.groups[self.head] if g.name == key.split("/", 1)[1])
            known = mask[:, group.columns]
            true = torch.where(known, targets[:, group.columns].long(), torch.full_like(known, -1, dtype=torch.long))
            state.true[rows] = true.to(state.true.dtype)
            state.current[rows] = state.true[rows]
            state.valid[rows] = known
            state.seen[rows] = 0
            state.correct[rows] = 0

    def train_step(self, batch: dict[str, dict[str, torch.Tensor]], step: int) -> dict[str, float]:
        if step % self.relabel_every == 0 or not self.rounds:
            self.relabel(step)
        target = batch.pop(self.target)
        index = target["index"].cpu()
        strong = to_model_input(target["image"])
        strong = augment_batch(strong, flip=False, color=self.strong_color, erase=self.strong_erase)
        strong = strong.add(1.0).mul(127.5).round().clamp(0, 255).to(target["image"].dtype)
        source = batch[self.head]
        device = source["targets"].device
        batch[self.head] = {
            "image": torch.cat([source["image"], strong]),
            "targets": torch.cat([source["targets"], self.pseudo_targets[index].to(device)]),
            "mask": torch.cat([source["mask"], self.pseudo_mask[index].to(device)]),
            "index": torch.cat([source["index"], index.to(source["index"].device) + len(self.train_sets[self.head])]),
        }
        metrics = super().train_step(batch, step)
        metrics["pseudo/kept_fraction"] = float(self.pseudo_mask.any(1).float().mean())
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds = list(state.get("rounds", []))
        if self.rounds:  # before the SA tags load: they were saved for these labels
            self._use(self.rounds[-1]["targets"].clone(), self.rounds[-1]["mask"].clone())
        super().load_state_dict(state)
