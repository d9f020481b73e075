"""SA-softmax (self-assessment softmax) with dynamic tags (Yu 2017, sec. 3.6).

A classifier over N classes gets one more output, class index N ("unrecognizable", the
N+1-th class of the thesis). Every (training image, task) pair carries a 4-tuple
(times seen, times predicted correctly, true label, current label):

1. train with plain softmax over the N real classes (`SASchedule.plain_epochs`);
2. switch to N+1 outputs; the training target is the *current* label;
3. every `window_epochs` epochs: an entry whose current label is its true label and whose
   accuracy in the window is below `threshold` is relabelled to N; an entry whose current
   label is N and whose accuracy is below `threshold` gets its true label back; others keep
   their label; the counters are reset.

Accuracy is measured against the current label, so an image relabelled to N counts as
correct while the model still puts it in N; once the model stops doing so its accuracy
falls and it is restored. This is what makes the restore rule work.

Layouts
-------
Logits of T tasks are one tensor `[B, T, C]` with `C >= max_t N_t + 1`: for task t,
`logits[:, t, :N_t]` are its real classes, `logits[:, t, N_t]` is "unrecognizable" and
`logits[:, t, N_t + 1:]` is padding, which every function here masks out itself (any value
there, including -inf, is ignored). A `[B, C]` tensor is one task; a list of T tensors
`[B, N_t + 1]` is also accepted. Binary attributes are 2-class tasks: 3 logits each
("no", "yes", "unrecognizable"), e.g. `[B, 40, 3]` for CelebA's 40 attributes.

Targets are `LongTensor[B, T]` class indices, -1 where the entry has no label.

Plain phase: before SA is active the N+1-th logit is masked to -inf, so the loss is exactly
the plain softmax cross-entropy over the N real classes and the extra output receives no
gradient (it starts learning only when SA switches on). Test-time class probabilities use
the first N logits only, so they are the same function of the outputs in both phases.

Grades: confidence = 1 - p(N) of the softmax over all N+1 outputs; S = [0.8, 1], A = [0.6, 0.8),
B = [0.4, 0.6), C = [0.2, 0.4), D = [0, 0.2): every lower bound is inclusive.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "SATagState",
    "SASchedule",
    "sa_cross_entropy",
    "SAPrediction",
    "sa_predict",
    "max_softmax_confidence",
    "GRADES",
    "GRADE_LOWER_BOUNDS",
    "grade_index",
    "grade",
]

GRADES: tuple[str, ...] = ("S", "A", "B", "C", "D")
# Inclusive lower bound of each grade; the upper bound is the next better grade's lower bound
# (exclusive), and 1.0 (inclusive) for S.
GRADE_LOWER_BOUNDS: tuple[float, ...] = (0.8, 0.6, 0.4, 0.2, 0.0)


def _classes_tensor(num_classes: int | Sequence[int] | torch.Tensor, num_tasks: int) -> torch.Tensor:
    if isinstance(num_classes, torch.Tensor):
        values = num_classes.flatten().tolist()
    elif isinstance(num_classes, int):
        values = [num_classes] * num_tasks
    else:
        values = list(num_classes)
    if len(values) == 1 and num_tasks != 1:
        values = values * num_tasks
    if len(values) != num_tasks:
        raise ValueError(f"num_classes has {len(values)} entries for {num_tasks} tasks")
    if any(int(n) < 2 for n in values):
        raise ValueError(f"every task needs at least 2 real classes, got num_classes={values}")
    return torch.tensor([int(n) for n in values], dtype=torch.long)


class SATagState:
    """The dynamic tags of one task group over a training set.

    Args:
        num_images: rows of the training set (the `index` a batch carries).
        num_tasks: T.
        num_classes: N per task (int for all), not counting "unrecognizable" (index N).
        true_labels: `[num_images, num_tasks]` class indices; ignored where `valid` is False.
        valid: `[num_images, num_tasks]` which entries have a label. Entries without one are
            never counted or relabelled and their current label is always -1.
        threshold: accuracy in a window below which a tag flips (the thesis's: 0.5).

    Labels are kept as int16 and counters as int32: CelebA (202,599 x 40) then costs ~100 MB
    instead of ~260 MB, in memory and in every checkpoint.
    """

    def __init__(self, num_images: int, num_tasks: int, num_classes: int | Sequence[int] | torch.Tensor,
                 true_labels: torch.Tensor, valid: torch.Tensor, threshold: float = 0.5):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        shape = (num_images, num_tasks)
        if tuple(true_labels.shape) != shape or tuple(valid.shape) != shape:
            raise ValueError(f"true_labels {tuple(true_labels.shape)} and valid {tuple(valid.shape)} must both be {shape}")
        self.num_classes = _classes_tensor(num_classes, num_tasks)
        if int(self.num_classes.max()) >= torch.iinfo(torch.int16).max:
            raise ValueError(f"too many classes for SA tags: {int(self.num_classes.max())}")
        self.threshold = float(threshold)
        valid = valid.detach().to("cpu", torch.bool).clone()
        labels = true_labels.detach().to("cpu").long()
        bad = valid & ((labels < 0) | (labels >= self.num_classes.unsqueeze(0)))
        if bad.any():
            image, task = (int(v) for v in torch.nonzero(bad)[0])
            raise ValueError(f"true label {int(labels[image, task])} of image {image}, task {task} is outside "
                             f"[0, {int(self.num_classes[task])}) ({int(bad.sum())} such entries)")
        self.valid = valid
        self.true = torch.where(valid, labels, torch.full_like(labels, -1)).to(torch.int16)
        self.current = self.true.clone()
        self.seen = torch.zeros(shape, dtype=torch.int32)
        self.correct = torch.zeros(shape, dtype=torch.int32)
        self.windows_completed = 0

    @property
    def num_images(self) -> int:
        return self.true.shape[0]

    @property
    def num_tasks(self) -> int:
        return self.true.shape[1]

    def _unrecognizable(self) -> torch.Tensor:
        return self.num_classes.to(torch.int16).unsqueeze(0)

    def current_labels(self, indices: torch.Tensor) -> torch.Tensor:
        """Training targets `[B, T]` (long) of these images: class, N (unrecognizable) or -1."""
        return self.current[indices.long().cpu()].long()

    def unrecognizable_mask(self) -> torch.Tensor:
        """`[num_images, T]`: which entries are currently tagged "unrecognizable"."""
        return self.valid & (self.current == self._unrecognizable())

    def counters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(seen, correct) of the current window, the tensors themselves: data-parallel ranks
        sum them in place (all-reduce) before `end_window` so every replica flips the same tags."""
        return self.seen, self.correct

    def record(self, indices: torch.Tensor, predictions: torch.Tensor) -> None:
        """Count one prediction per (image, task) of a batch.

        `predictions` `[B, T]` are argmaxes over all N+1 outputs; an entry counts as correct
        when it equals the image's current label. Repeated indices in a batch count twice.
        """
        indices = indices.long().cpu().flatten()
        predictions = predictions.long().cpu()
        if predictions.dim() == 1 and self.num_tasks == 1:
            predictions = predictions.unsqueeze(1)
        if tuple(predictions.shape) != (indices.numel(), self.num_tasks):
            raise ValueError(f"predictions {tuple(predictions.shape)} must be [{indices.numel()}, {self.num_tasks}]")
        valid = self.valid[indices]
        hit = valid & (predictions == self.current[indices].long())
        self.seen.index_add_(0, indices, valid.to(torch.int32))
        self.correct.index_add_(0, indices, hit.to(torch.int32))

    def end_window(self) -> dict[str, int | float | list[int]]:
        """Apply the relabel/restore rules to every valid entry seen in this window, reset the
        counters and return what changed.

        Scalars: `relabelled`, `restored`, `unrecognizable_now`, `counted` (entries seen at
        least once), `window_accuracy` (correct/seen over the window, against current labels);
        lists per task: `relabelled_per_task`, `restored_per_task`, `unrecognizable_per_task`.
        """
        counted = self.valid & (self.seen > 0)
        # correct / seen < threshold, without float division
        low = counted & (self.correct.double() < self.threshold * self.seen.double())
        unrec = self._unrecognizable()
        relabel = low & (self.current == self.true)
        restore = low & (self.current == unrec)
        self.current = torch.where(relabel, unrec.expand_as(self.current), self.current)
        self.current = torch.where(restore, self.true, self.current)
        seen_total, correct_total = int(self.seen.sum()), int(self.correct.sum())
        self.seen.zero_()
        self.correct.zero_()
        self.windows_completed += 1
        now = self.unrecognizable_mask()
        return {
            "relabelled": int(relabel.sum()),
            "restored": int(restore.sum()),
            "unrecognizable_now": int(now.sum()),
            "counted": int(counted.sum()),
            "window_accuracy": correct_total / seen_total if seen_total else 0.0,
            "relabelled_per_task": relabel.sum(0).tolist(),
            "restored_per_task": restore.sum(0).tolist(),
            "unrecognizable_per_task": now.sum(0).tolist(),
        }

    def state_dict(self) -> dict[str, torch.Tensor | int | float]:
        """Plain tensors and numbers (loadable with `torch.load(weights_only=True)`). The true
        labels and validity are stored too, so resuming on different data is caught."""
        return {
            "num_classes": self.num_classes.clone(), "threshold": self.threshold,
            "windows_completed": self.windows_completed, "valid": self.valid.clone(), "true": self.true.clone(),
            "current": self.current.clone(), "seen": self.seen.clone(), "correct": self.correct.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if not torch.equal(state["num_classes"].long(), self.num_classes):
            raise ValueError(f"SA tags were saved for num_classes {state['num_classes'].tolist()}, "
                             f"this head has {self.num_classes.tolist()}")
        if tuple(state["true"].shape) != tuple(self.true.shape):
            raise ValueError(f"SA tags were saved for {tuple(state['true'].shape)} (images, tasks), "
                             f"the training set now gives {tuple(self.true.shape)}")
        if not (torch.equal(state["valid"].bool(), self.valid) and torch.equal(state["true"].to(torch.int16), self.true)):
            raise ValueError("SA tags were saved for different training labels (the dataset, its split or its order "
                             "changed since the checkpoint); resuming would tag the wrong images")
        self.threshold = float(state["threshold"])
        self.windows_completed = int(state["windows_completed"])
        self.current = state["current"].to(torch.int16).clone()
        self.seen = state["seen"].to(torch.int32).clone()
        self.correct = state["correct"].to(torch.int32).clone()


class SASchedule:
    """When SA-softmax is on and when a counting window ends: pure functions of epoch (or step)
    numbers, so a resumed run makes exactly the same decisions.

    Epochs are 0-based. Epochs `0 .. plain_epochs-1` train plain softmax; from epoch
    `plain_epochs` on, SA is active and windows of `window_epochs` epochs follow one another.
    """

    def __init__(self, plain_epochs: int, window_epochs: int = 10):
        if plain_epochs < 0 or window_epochs < 1:
            raise ValueError(f"need plain_epochs >= 0 and window_epochs >= 1, got {plain_epochs}, {window_epochs}")
        self.plain_epochs = int(plain_epochs)
        self.window_epochs = int(window_epochs)

    def active(self, epoch: int) -> bool:
        """True when epoch `epoch` trains with N+1 outputs and the dynamic tags."""
        return epoch >= self.plain_epochs

    def window_ends(self, epoch: int) -> bool:
        """True when a counting window ends with epoch `epoch` (call `end_window` after it)."""
        return self.active(epoch) and (epoch - self.plain_epochs + 1) % self.window_epochs == 0

    def window_index(self, epoch: int) -> int:
        """0-based index of the window epoch `epoch` belongs to; -1 in the plain phase."""
        return (epoch - self.plain_epochs) // self.window_epochs if self.active(epoch) else -1

    # Step-based variants for step-driven loops: `batch_size` images of this training set are
    # drawn per step; epochs are fractional, and integer arithmetic keeps them exact.
    def active_at_step(self, step: int, batch_size: int, num_images: int) -> bool:
        """True when step `step` (0-based) starts at or after `plain_epochs` epochs."""
        return step * batch_size >= self.plain_epochs * num_images

    def window_ends_at_step(self, step: int, batch_size: int, num_images: int) -> bool:
        """True when step `step` is active and completes a window (crosses a multiple of
        `window_epochs` epochs counted from the start of SA)."""
        if not self.active_at_step(step, batch_size, num_images):
            return False
        start, window = self.plain_epochs * num_images, self.window_epochs * num_images
        return ((step + 1) * batch_size - start) // window > (step * batch_size - start) // window


def _as_task_tensor(logits: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """`[B, T, C]` from a `[B, T, C]` tensor, a `[B, C]` one (T = 1) or a list of `[B, C_t]`."""
    if isinstance(logits, torch.Tensor):
        if logits.dim() == 2:
            return logits.unsqueeze(1)
        if logits.dim() != 3:
            raise ValueError(f"logits must be [B, T, C] or [B, C], got {tuple(logits.shape)}")
        return logits
    parts = list(logits)
    if not parts:
        raise ValueError("empty list of logits")
    width = max(p.shape[-1] for p in parts)
    # padding is masked out by every caller, so its value does not matter
    return torch.stack([F.pad(p, (0, width - p.shape[-1])) for p in parts], dim=1)


def _class_mask(num_classes: torch.Tensor, width: int, include_unrecognizable: bool, device) -> torch.Tensor:
    """`[T, C]` True where a logit takes part in the softmax."""
    positions = torch.arange(width, device=device).unsqueeze(0)
    limit = num_classes.to(device).unsqueeze(1) + (1 if include_unrecognizable else 0)
    return positions < limit


def _task_logits_and_targets(logits, targets: torch.Tensor, num_classes, unrecognizable_target: bool,
                             allowed_targets: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checked inputs of an SA loss: logits as [B, T, C], targets as long [B, T] (-1 where
    unlabelled; N allowed only with `unrecognizable_target`, else an error naming
    `allowed_targets`), and the real classes N per task."""
    x = _as_task_tensor(logits)
    batch, tasks, width = x.shape
    if targets.dim() == 1 and tasks == 1:
        targets = targets.unsqueeze(1)
    if tuple(targets.shape) != (batch, tasks):
        raise ValueError(f"targets {tuple(targets.shape)} must be [{batch}, {tasks}] for logits {tuple(x.shape)}")
    n = _classes_tensor(num_classes, tasks)
    if int(n.max()) + 1 > width:
        raise ValueError(f"logits have {width} outputs per task; num_classes {n.tolist()} needs N+1 = {int(n.max()) + 1}")
    targets = targets.long()
    limit = n.to(targets.device).unsqueeze(0) + (1 if unrecognizable_target else 0)
    out_of_range = (targets < -1) | (targets >= limit)
    if out_of_range.any():
        raise ValueError(f"target {int(targets[out_of_range][0])} is outside the {allowed_targets}; "
                         f"num_classes = {n.tolist()}")
    return x, targets, n


def sa_cross_entropy(logits: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor,
                     num_classes: int | Sequence[int] | torch.Tensor, sa_active: bool = True) -> torch.Tensor:
    """Cross-entropy of SA-softmax heads, mean over the entries whose target is not -1.

    With `sa_active` the softmax runs over N+1 outputs and targets may be N (unrecognizable);
    without it the N+1-th logit is masked to -inf, which makes the loss exactly the plain
    cross-entropy over the N real classes, and a target N is an error. A batch with no
    labelled entry gives a zero that still carries a graph.
    """
    phase = "classes of the SA phase (0..N)" if sa_active else "classes of the plain phase (0..N-1)"
    x, targets, n = _task_logits_and_targets(logits, targets, num_classes, sa_active, phase)
    width = x.shape[-1]
    allowed = _class_mask(n, width, sa_active, x.device)
    masked = x.float().masked_fill(~allowed.unsqueeze(0), float("-inf"))
    labelled = targets >= 0
    if not labelled.any():
        return x.float().sum() * 0.0
    return F.cross_entropy(masked[labelled], targets[labelled])


class SAPrediction(NamedTuple):
    probs: torch.Tensor  # [..., N_max] softmax over the first N logits (0 beyond a task's N)
    confidence: torch.Tensor  # [...] 1 - p(unrecognizable) of the softmax over all N+1
    pred: torch.Tensor  # [...] argmax of probs


@torch.no_grad()
def sa_predict(logits: torch.Tensor | Sequence[torch.Tensor],
               num_classes: int | Sequence[int] | torch.Tensor | None = None) -> SAPrediction:
    """Test-time outputs of SA-softmax heads.

    `num_classes` None means every task uses all of its outputs: N = C - 1 (the last logit is
    "unrecognizable"). A `[B, C]` input gives `[B, N]`, `[B]`, `[B]`; `[B, T, C]` gives
    `[B, T, N_max]`, `[B, T]`, `[B, T]`.
    """
    single = isinstance(logits, torch.Tensor) and logits.dim() == 2
    x = _as_task_tensor(logits).float()
    batch, tasks, width = x.shape
    if num_classes is None:
        if not isinstance(logits, torch.Tensor):
            num_classes = [p.shape[-1] - 1 for p in logits]
        else:
            num_classes = width - 1
    n = _classes_tensor(num_classes, tasks)
    if int(n.max()) + 1 > width:
        raise ValueError(f"logits have {width} outputs per task; num_classes {n.tolist()} needs N+1 = {int(n.max()) + 1}")
    n_max = int(n.max())
    real = _class_mask(n, width, False, x.device)
    full = _class_mask(n, width, True, x.device)
    probs = x.masked_fill(~real.unsqueeze(0), float("-inf")).softmax(-1)[..., :n_max]
    all_probs = x.masked_fill(~full.unsqueeze(0), float("-inf")).softmax(-1)
    p_unrec = all_probs.gather(-1, n.to(x.device).view(1, tasks, 1).expand(batch, tasks, 1)).squeeze(-1)
    confidence = (1.0 - p_unrec).clamp(0.0, 1.0)
    pred = probs.argmax(-1)
    if single:
        return SAPrediction(probs[:, 0], confidence[:, 0], pred[:, 0])
    return SAPrediction(probs, confidence, pred)


@torch.no_grad()
def max_softmax_confidence(logits: torch.Tensor) -> torch.Tensor:
    """The baseline confidence: the largest probability of the softmax over the N real logits
    (last dimension)."""
    return logits.float().softmax(-1).max(-1).values


def grade_index(confidence: torch.Tensor | float) -> torch.Tensor:
    """Index into `GRADES` (0 = S ... 4 = D) of each confidence; lower bounds are inclusive
    (0.8 is S, 0.6 is A, ...). Values are clamped to [0, 1]; NaN is an error."""
    # Python numbers stay float64: float32 would round 0.79999999 up into grade S
    c = confidence if isinstance(confidence, torch.Tensor) else torch.as_tensor(confidence, dtype=torch.float64)
    if not c.is_floating_point():
        c = c.double()
    if torch.isnan(c).any():
        raise ValueError("confidence contains NaN")
    c = c.clamp(0.0, 1.0)
    index = torch.full(c.shape, len(GRADES) - 1, dtype=torch.long, device=c.device)
    # from the lowest grade up, so each value ends at the best grade whose bound it reaches
    for k in range(len(GRADES) - 2, -1, -1):
        index = torch.where(c >= GRADE_LOWER_BOUNDS[k], torch.full_like(index, k), index)
    return index


def grade(confidence: torch.Tensor | float) -> list[str]:
    """Grade letters of the flattened confidences (see `grade_index`)."""
    return [GRADES[i] for i in grade_index(confidence).flatten().tolist()]


def gamblers_loss(logits: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor,
                  num_classes: int | Sequence[int] | torch.Tensor, reward: float) -> torch.Tensor:
    """The gamblers' loss (Liu et al., "Deep Gamblers: Learning to Abstain with Portfolio
    Theory", NeurIPS 2019) on SA-softmax heads, mean over the entries whose target is not -1:
    -log(p_y + p_N / o) with p the softmax over all N+1 outputs.

    Instead of the thesis's hard relabelling, every face keeps its true label and the model may
    bet part of its mass on "unrecognizable", which pays 1/o of a correct answer. The payoff
    o lies in (1, N]; `reward` in (0, 1] places it there per task, o = 1 + reward (N - 1), so
    one setting serves binary and 5-way tasks alike (smaller reward: more abstention).
    """
    if not 0.0 < reward <= 1.0:
        raise ValueError(f"reward must be in (0, 1], got {reward}")
    x, targets, n = _task_logits_and_targets(logits, targets, num_classes, False, "real classes 0..N-1")
    batch, tasks, width = x.shape
    labelled = targets >= 0
    if not labelled.any():
        return x.float().sum() * 0.0
    allowed = _class_mask(n, width, True, x.device)
    log_p = torch.log_softmax(x.float().masked_fill(~allowed.unsqueeze(0), float("-inf")), dim=-1)
    payoff = 1.0 + reward * (n.to(x.device).float() - 1.0)                        # [T]
    abstain = log_p.gather(-1, n.to(x.device).view(1, tasks, 1).expand(batch, tasks, 1)).squeeze(-1)
    correct = log_p.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    # log(p_y + p_N / o), computed in log space so that tiny probabilities stay finite
    log_bet = torch.logaddexp(correct, abstain - torch.log(payoff).unsqueeze(0))
    return -log_bet[labelled].mean()

