"""Learning-rate schedules as pure functions of the step.

A step sets its optimiser's rate from `learning_rate(step, ...)` before every update, so a
resumed run follows the schedule exactly with no scheduler state in the checkpoint.

A run bounded by wall-clock time does not know how many steps it will make: a cosine planned for
`total_steps` is cut short if the machine is slower than guessed, and stops early, leaving time
unused, if it is faster. Given `budget_spent` (the share of the time budget spent, from
`StepContext.budget_spent()`), the cosine's progress is the larger of the step's and the
clock's, so it reaches its end when the budget does, whichever comes first.
"""
from __future__ import annotations

import math

__all__ = ["SCHEDULES", "learning_rate"]

SCHEDULES = ("cosine", "step", "constant")


def learning_rate(
    step: int,
    base_lr: float,
    schedule: str = "constant",
    *,
    warmup_steps: int = 0,
    total_steps: int = 0,
    min_lr_ratio: float = 0.0,
    step_every: int = 0,
    step_gamma: float = 0.5,
    budget_spent: float = 0.0,
) -> float:
    """The rate at `step` (counted from 0): a linear warm-up from 0 over `warmup_steps`, then

    - "constant": `base_lr`;
    - "step": `base_lr` times `step_gamma` for every `step_every` steps after the warm-up;
    - "cosine": half a cosine from `base_lr` down to `min_lr_ratio * base_lr` at `total_steps`
      or when `budget_spent` reaches 1, whichever is first, held there after it.
    """
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        if step_every <= 0:
            raise ValueError("the step schedule needs step_every > 0")
        return base_lr * step_gamma ** ((step - warmup_steps) // step_every)
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span, budget_spent))
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
