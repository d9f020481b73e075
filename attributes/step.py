"""AttributeStep: one dataset-parallel training step of the attribute model, for the engine Trainer.

Per step: the images of every dataset's batch are concatenated, augmented, and passed through
the trunk ONCE; each dataset's slice goes to its heads; each (dataset, task group) term's loss
is computed on the labelled entries only; the terms are combined (fixed or uncertainty
weights); one optimizer step. With SA-softmax, the step also keeps each dataset's per-image
tag state (Yu 2017, sec. 3.6.2) and closes a counting window whenever that dataset has been seen for
`window_epochs` more epochs; the state is part of the checkpoint. With `sa.method: gamblers` there
are no tags: the SA heads learn from the true labels with the gamblers' loss.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from attributes.config import AugmentConfig, DistillConfig, LossConfig, OptimConfig, SAConfig
from attributes.heads import TaskGroup, decode_group, group_loss
from attributes.inference import binary_validation, predict_cache, threshold_key, to_model_input
from attributes.losses import FeatureCenters, distillation_loss, exclusive_regularization, f_measure_loss
from attributes.model import AttributeModel
from attributes.multidataset import augment_batch, combine_losses, mixup_partners
from attributes.slimming import AdaptiveL1, SlimConfig, l1_of_scales, slimmable_units, sparsity
from attributes.verification import embed_faces, pairwise_auc
from data_prep.cache import IDENTITY_TASK
from data_prep.datasets.schema import TaskKind
from engine import schedules
from engine.config import ConfigError
from engine.errors import FaceganError

__all__ = ["AttributeStep", "DistillStep"]


class AttributeStep:
    def __init__(self, model: AttributeModel, train_sets: dict[str, Any], val_sets: dict[str, Any], batch_size: int,
                 max_steps: int, optim: OptimConfig, loss: LossConfig, sa: SAConfig, augment: AugmentConfig,
                 flip_tta: bool = True, calibrate_thresholds: bool = True, eval_batch_size: int = 256,
                 slim: SlimConfig | None = None):
        self.model = model
        self.train_sets = train_sets
        self.val_sets = val_sets
        # Datasets without heads are unlabelled: their faces only pass the trunk, for the
        # auxiliary losses of a subclass (domain-adversarial training, say).
        self.names = [name for name in train_sets if name in model.groups]
        self.unlabelled = [name for name in train_sets if name not in model.groups]
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.optim_config = optim
        self.loss_config = loss
        self.sa_config = sa
        self.augment = augment
        self.flip_tta = flip_tta
        self.calibrate_thresholds = calibrate_thresholds
        self.eval_batch_size = eval_batch_size
        # Single-label heads, keyed by sub-network and group, so a shared head has one set of centres.
        self.single_label_heads = {
            f"{group.subnet}/{group.name}": group for name in self.names for group in model.groups[name]
            if group.kind in (TaskKind.CATEGORICAL, TaskKind.ORDINAL)
        }
        self.centers = None
        if (loss.center or loss.contrastive_center) and self.single_label_heads:
            dim = model.feature_dim
            self.centers = FeatureCenters({key: (group.num_classes, dim) for key, group in self.single_label_heads.items()},
                                          center=loss.center > 0, contrastive=loss.contrastive_center > 0,
                                          delta=loss.contrastive_delta)
        if augment.mixup > 0:
            # A blended face has two label sets; these losses follow one label per face.
            clashes = [what for what, on in (
                ("SA-softmax (its tags are per face)", any(g.sa for n in self.names for g in model.groups[n])),
                ("loss.center", loss.center > 0), ("loss.contrastive_center", loss.contrastive_center > 0),
                ("loss.f_measure", loss.f_measure > 0)) if on]
            if clashes:
                raise ConfigError(f"augment.mixup cannot be combined with {', '.join(clashes)}")
        self.slim_config = slim
        self.slim = None  # the adaptive lambda; a fixed one is slim.l1
        if slim is not None and (slim.target > 0 or slim.l1 > 0):
            slimmable_units(model)  # refuses a trunk it cannot slim, before any training
            self.slim = AdaptiveL1(slim, max_steps) if slim.target > 0 else None
        self.optimizer = self._build_optimizer()
        if self.centers is not None and self.centers.contrastive is not None:
            self.optimizer.add_param_group({"params": list(self.centers.parameters()), "weight_decay": 0.0})
        self.sa_states: dict[str, Any] = self._build_sa_states()
        self.gamblers_reward = sa.gamblers_reward if sa.method == "gamblers" else 0.0
        from attributes.sa_softmax import SASchedule

        self.sa_schedule = SASchedule(sa.plain_epochs, sa.window_epochs)
        self.thresholds: dict[str, torch.Tensor] = {}  # dataset -> per-binary-attribute threshold
        self.ctx = None

    # -- Step protocol -----------------------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        if self.centers is not None:
            return {"model": self.model, "centers": self.centers}
        return {"model": self.model}

    def optimizers(self) -> dict[str, Optimizer]:
        return {"model": self.optimizer}

    def setup(self, ctx) -> None:
        self.ctx = ctx

    def state_dict(self) -> dict[str, Any]:
        state = {
            "sa": {key: state.state_dict() for key, state in self.sa_states.items()},
            "thresholds": {k: v.clone() for k, v in self.thresholds.items()},
        }
        if self.slim is not None:
            state["slim"] = self.slim.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, sa_state in state.get("sa", {}).items():
            self.sa_states[key].load_state_dict(sa_state)
        self.thresholds = {k: v.clone() for k, v in state.get("thresholds", {}).items()}
        if self.slim is not None and "slim" in state:
            self.slim.load_state_dict(state["slim"])

    def l1_coefficient(self) -> float:
        """The current lambda of the L1 on the trunk's BN scales (0: no slimming)."""
        if self.slim is not None:
            return self.slim.lam
        return self.slim_config.l1 if self.slim_config is not None else 0.0

    # -- set-up --------------------------------------------------------------------------------
    def _build_optimizer(self) -> Optimizer:
        cfg = self.optim_config
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)  # no decay on BN, biases, log-variances
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer == "adamw":
            # foreach: torch picks the batched implementation on GPUs only; on the CPU it is as exact and faster.
            return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), foreach=True)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, foreach=True)

    def _build_sa_states(self) -> dict[str, Any]:
        """The thesis's dynamic tags of every SA group (none with the gamblers' loss, which keeps
        the true labels)."""
        states = {}
        if self.sa_config.method == "gamblers":
            return states
        for dataset in self.names:
            cache = self.train_sets[dataset]
            for group in self.model.groups[dataset]:
                if not group.sa:
                    continue
                from attributes.sa_softmax import SATagState

                targets, mask = cache.targets[:, group.columns], cache.mask[:, group.columns]
                states[f"{dataset}/{group.name}"] = SATagState(
                    len(cache), len(group.tasks), group.num_classes, targets.round().long(), mask,
                    threshold=self.sa_config.threshold,
                )
        return states

    def set_pos_weights(self) -> None:
        """Class-balanced BCE: weight (1 - p) / p on positives, p = training prevalence."""
        for dataset in self.names:
            cache = self.train_sets[dataset]
            for group in self.model.groups[dataset]:
                if group.kind is TaskKind.BINARY and not group.sa:
                    t, m = cache.targets[:, group.columns], cache.mask[:, group.columns].float()
                    p = ((t * m).sum(0) / m.sum(0).clamp(min=1)).clamp(0.02, 0.98)
                    group.pos_weight = (1 - p) / p

    def learning_rate(self, step: int) -> float:
        cfg = self.optim_config
        clock = self.ctx.budget_spent() if cfg.schedule_follows_clock and self.ctx is not None else 0.0
        return schedules.learning_rate(step, cfg.lr, cfg.schedule, warmup_steps=cfg.warmup_steps,
                                       total_steps=cfg.schedule_steps or self.max_steps, min_lr_ratio=cfg.min_lr_ratio,
                                       budget_spent=clock)

    # -- SA-softmax bookkeeping -------------------------------------------------------------
    def sa_active(self, dataset: str, step: int) -> bool:
        return self.sa_schedule.active_at_step(step, self.batch_size, len(self.train_sets[dataset]))

    def _window_ended(self, dataset: str, step: int) -> bool:
        return self.sa_schedule.window_ends_at_step(step, self.batch_size, len(self.train_sets[dataset]))

    # -- the step ----------------------------------------------------------------------------
    def train_step(self, batch: dict[str, dict[str, torch.Tensor]], step: int) -> dict[str, float]:
        ctx = self.ctx
        lr = self.learning_rate(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        layout = [(name, batch[name]["image"].shape[0]) for name in self.names]
        extra = sum(batch[name]["image"].shape[0] for name in self.unlabelled)
        images = to_model_input(torch.cat([batch[name]["image"] for name in self.names + self.unlabelled]))
        images = augment_batch(images, self.augment.flip, self.augment.max_shift, grayscale=self.augment.grayscale,
                               rotate=self.augment.rotate, scale=self.augment.scale, erase=self.augment.erase,
                               color=self.augment.color)
        mix = None
        if self.augment.mixup > 0:
            lam, partners = mixup_partners(layout, extra, self.augment.mixup)
            images = lam * images + (1.0 - lam) * images[partners.to(images.device)]
            starts = torch.tensor([0] + [size for _, size in layout]).cumsum(0).tolist()
            # Each face's partner as an index into its own dataset's slice (its targets' rows).
            mix = (lam, {name: partners[start:start + size] - start for (name, size), start in zip(layout, starts)})
        self.model.train()
        with ctx.autocast():
            outputs, log_vars, features, embeddings = ctx.models["model"](images, layout, extra, return_features=True,
                                                                          return_embeddings=True)
        losses: dict[str, torch.Tensor] = {}
        joint: dict[str, torch.Tensor] = {}  # weighted joint-supervision terms
        metrics: dict[str, float] = {}
        for name in self.names:
            targets, mask, index = batch[name]["targets"], batch[name]["mask"], batch[name]["index"]
            active = self.sa_active(name, step)
            for group in self.model.groups[name]:
                out = outputs[name][group.name].float()
                key = f"{name}/{group.name}"
                sa_state = self.sa_states.get(key)
                sa_targets = sa_state.current_labels(index.cpu()).to(out.device) if sa_state is not None and active else None
                smoothing = self.loss_config.label_smoothing
                loss = group_loss(group, out, targets[:, group.columns], mask[:, group.columns], sa_targets, active,
                                  smoothing=smoothing, gamblers_reward=self.gamblers_reward)
                if mix is not None:
                    loss = _mixed_loss(group, out, targets[:, group.columns], mask[:, group.columns], loss, mix[0],
                                       mix[1][name], smoothing)
                if loss is not None:
                    metrics[f"loss/{key}"] = float(loss.detach())
                    if self.loss_config.sparse_labels == "by_coverage":
                        loss = loss * mask[:, group.columns].float().mean()
                    losses[key] = loss
                if sa_state is not None and active:
                    sa_state.record(index.cpu(), _sa_predictions(group, out.detach()).cpu())
                if group.kind is TaskKind.BINARY and not group.sa and self.loss_config.f_measure > 0:
                    f_loss = f_measure_loss(out, targets[:, group.columns], mask[:, group.columns],
                                            self.loss_config.f_measure_beta2, self.loss_config.f_measure_variant)
                    joint[f"{key}/f_measure"] = self.loss_config.f_measure * f_loss
                if group.kind is TaskKind.BINARY:
                    decoded = decode_group(group, out.detach())
                    m = mask[:, group.columns]
                    if m.any():
                        metrics[f"train_acc/{name}"] = float((decoded["pred"] == targets[:, group.columns].long())[m].float().mean())
        use_uncertainty = self.loss_config.weighting == "uncertainty"
        total = combine_losses(losses, self.model.loss_terms, self.loss_config.weights, log_vars.float() if use_uncertainty else None)
        head_embeddings, head_labels = self._single_label_batch(embeddings, batch)
        joint.update(self._feature_losses(head_embeddings, head_labels))
        lam = self.l1_coefficient()
        if lam > 0:
            joint["slim_l1"] = lam * l1_of_scales(self.model)
        auxiliary = self.auxiliary_losses(features, layout, extra, step, images=images, outputs=outputs)
        for key, loss in {**joint, **auxiliary}.items():
            total = total + loss
            metrics[f"loss/{key}"] = float(loss.detach())
        metrics["grad_norm"] = ctx.optimize("model", total)
        if self.centers is not None:
            self.centers.update(head_embeddings, head_labels, self.loss_config.center_alpha, _all_reduce_of(ctx))
        if self.slim is not None or lam > 0:  # the adaptive lambda starts at 0 and is watched from the start
            metrics["slim/lambda"] = lam
            if (step + 1) % self.slim_config.adjust_every == 0:
                current = sparsity(self.model, self.slim_config.tau, self.slim_config.scope)
                metrics["slim/sparsity"] = current
                if self.slim is not None:
                    self.slim.observe(current)
        metrics = {"loss": float(total.detach()), "lr": lr, **metrics}
        for key, sa_state in self.sa_states.items():
            if self.sa_active(key.split("/")[0], step):  # logged every step, so any log interval shows the tags
                valid = sa_state.valid.sum().clamp(min=1)
                metrics[f"sa/{key}/unrecognizable_fraction"] = float(sa_state.unrecognizable_mask().sum() / valid)
        for name in self.names:
            if self._window_ended(name, step):
                for key, sa_state in self.sa_states.items():
                    if key.startswith(f"{name}/"):
                        _all_reduce_counts(sa_state, ctx)
                        for stat, value in sa_state.end_window().items():
                            if isinstance(value, (int, float)):
                                metrics[f"sa/{key}/{stat}"] = float(value)
        return metrics

    def _single_label_batch(self, embeddings, batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The labelled embeddings and labels of each single-label head (datasets sharing a head pooled)."""
        if not (self.loss_config.center or self.loss_config.contrastive_center):
            return {}, {}
        parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for name in self.names:
            targets, mask = batch[name]["targets"], batch[name]["mask"]
            for group in self.model.groups[name]:
                key = f"{group.subnet}/{group.name}"
                if key not in self.single_label_heads:
                    continue
                embedding = embeddings[name][group.subnet].float()
                valid = mask[:, group.columns[0]].to(embedding.device)
                x = embedding[valid]
                y = targets.to(embedding.device)[valid, group.columns[0]].round().long()
                parts.setdefault(key, []).append((x, y))
        return ({key: torch.cat([x for x, _ in p]) for key, p in parts.items()},
                {key: torch.cat([y for _, y in p]) for key, p in parts.items()})

    def _feature_losses(self, head_embeddings, head_labels) -> dict[str, torch.Tensor]:
        """Weighted center, contrastive-center and exclusive terms of the single-label heads."""
        cfg = self.loss_config
        terms: dict[str, torch.Tensor] = {}
        if self.centers is not None:
            for key, loss in self.ctx.models["centers"](head_embeddings, head_labels).items():
                weight = cfg.center if key.endswith("/center") else cfg.contrastive_center
                terms[key] = weight * loss
        if cfg.exclusive > 0:
            for key, group in self.single_label_heads.items():
                if group.num_classes >= 2:
                    terms[f"{key}/exclusive"] = cfg.exclusive * exclusive_regularization(
                        self.model.classifier_weight(group).float())
        return terms

    def auxiliary_losses(self, features: torch.Tensor, layout: list[tuple[str, int]], unlabelled: int,
                         step: int, images: torch.Tensor | None = None,
                         outputs: dict[str, dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms from the step's trunk features of the whole batch (labelled
        slices in `layout` order, then `unlabelled` faces), its augmented input `images` and the
        heads' `outputs`; none here, subclasses (domain-adversarial, distillation) add theirs."""
        return {}

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """Validation metrics per dataset; `score` (mean of each dataset's main accuracy) drives best.pt
        (with a slimming target, only once the trunk is that sparse). Binary thresholds are
        re-chosen on this validation data when calibration is on."""
        results: dict[str, float] = {}
        scores = []
        model = self.ctx.ema.get("model", self.model) if self.ctx is not None else self.model
        device = next(self.model.parameters()).device
        for name, cache in self.val_sets.items():
            if cache is None or len(cache) == 0:
                continue
            predictions = predict_cache(model, cache, name, self.eval_batch_size, device, self.flip_tta)
            targets, mask = cache.targets, cache.mask
            for group in model.groups[name]:
                decoded = predictions[group.name]
                t, m = targets[:, group.columns], mask[:, group.columns]
                if group.name == IDENTITY_TASK:  # held-out people: how well the embedding tells them apart
                    auc = pairwise_auc(embed_faces(model, cache, group.subnet, self.eval_batch_size, device),
                                       [r.identity for r in cache.records])
                    if auc is not None:
                        results[f"{name}/{group.name}_verification_auc"] = auc
                        scores.append(auc)
                if not m.any():
                    continue
                if group.kind is TaskKind.BINARY:
                    acc, metrics, thresholds = binary_validation(name, group.name, decoded["prob"], t, m,
                                                                 self.calibrate_thresholds)
                    results.update(metrics)
                    if thresholds is not None:
                        self.thresholds[threshold_key(name, group.name)] = thresholds
                    scores.append(acc)
                elif group.kind is TaskKind.REGRESSION:
                    valid = m[:, 0]
                    results[f"{name}/{group.name}_mae"] = float((decoded["value"][valid] - t[valid, 0]).abs().mean())
                else:
                    valid = m[:, 0]
                    acc = (decoded["pred"][valid] == t[valid, 0].long()).float().mean()
                    results[f"{name}/{group.name}_accuracy"] = float(acc)
                    scores.append(float(acc))
        if scores:
            results["score"] = sum(scores) / len(scores)
        if self.slim is not None:
            # best.pt is the checkpoint that gets pruned. One from before the trained weights reached
            # the sparsity target loses accuracy when its still-live channels are cut, so such a
            # checkpoint does not compete for best.pt.
            reached = sparsity(self.model, self.slim_config.tau, self.slim_config.scope)
            results["slim/sparsity"] = reached
            if reached < self.slim_config.target and "score" in results:
                results["score_before_target"] = results.pop("score")
        return results


def _mixed_loss(group: TaskGroup, out: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                own: torch.Tensor | None, lam: float, partners: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor | None:
    """Mixup's loss: lam times the loss on each face's own labels plus (1 - lam) times the loss
    on its partner's (`partners`: each face's partner within this dataset's batch; for BCE this
    equals BCE on the blended targets). A side with no labels in the batch drops out and the
    other keeps its full weight."""
    partners = partners.to(targets.device)
    other = group_loss(group, out, targets[partners], mask[partners], smoothing=smoothing)
    if own is None or other is None:
        return own if other is None else other
    return lam * own + (1.0 - lam) * other


def _sa_predictions(group: TaskGroup, out: torch.Tensor) -> torch.Tensor:
    """argmax over all N+1 outputs: what the dynamic tags compare against the current label."""
    if group.kind is TaskKind.BINARY:
        return out.view(out.shape[0], len(group.tasks), 3).argmax(-1)
    return out.argmax(-1, keepdim=True)


def _all_reduce_of(ctx):
    """torch.distributed's all_reduce when the run is distributed, else None."""
    if ctx is None or not ctx.dist.enabled:
        return None
    import torch.distributed as dist

    return dist.all_reduce


def _all_reduce_counts(sa_state, ctx) -> None:
    """Sum each rank's window counts so every replica flips the same tags."""
    all_reduce = _all_reduce_of(ctx)
    if all_reduce is None:
        return
    for tensor in sa_state.counters():
        all_reduce(tensor)


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
