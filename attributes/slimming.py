"""Network slimming (Liu et al., ICCV 2017) of the AlexNet-BN trunk, with Zhao's (2020, ch. 5) adaptive L1 rule.

Training (`SlimConfig`, an option of `attributes train`): L1 on the BatchNorm scales of the trunk,
lambda * sum |gamma|, added to the loss. A channel counts as sparse when |gamma| < tau * max |gamma|
(tau = 0.05, Zhao 2020, eq. 5.2), the maximum taken over the whole trunk ("global", as network
slimming compares channels across layers) or within its layer ("per_layer", Zhao's own
rule); the sparsity P is the share of sparse channels (eq. 5.3). With `adaptive`, lambda starts
at `l1` and, every `adjust_every` steps (t of N checks), follows Zhao's algorithm 5.6:
    if P_t - P_{t-1} < (r - P_{t-1}) / (N - t + 1):  raise lambda   (not on course for r)
    elif P_t > r:                                     lower lambda   (past it)
so that the requested share r of channels ends below the threshold without a hand-tuned lambda.
Without `adaptive`, lambda stays at `l1` (network slimming's fixed coefficient).

How far one check moves lambda is `step`. The seed adds or subtracts a fixed `delta` ("additive"),
which suits its long SGD runs: one check per epoch over hundreds of epochs. In a budget of ~50
checks, lambda can then reach at most 50 * delta, so delta itself has to be tuned to the optimiser
and the loss scale -- the hand-tuning the rule is meant to remove. Measured (2026-11-25, AdamW,
celeba64 preset, delta = 2e-5): lambda rose at every check to 8e-4 and only 20% of the channels
were sparse for a 50% target. "geometric" (the default) keeps the seed's test and multiplies
lambda by (1 + growth) or divides it by that, starting from `delta`, so lambda finds its scale
within a few checks whatever the optimiser.

Pruning (`prune_model`): a global threshold across the trunk's BatchNorm layers, as network
slimming uses: the `ratio` of channels with the smallest |gamma| go, except that every layer
keeps at least `min_keep` of its channels. The channels are removed physically: each conv
unit's filters and BN entries, the next conv's input channels, and, after the last unit, the
input channels of every head's first conv. The result is an ordinary attribute model whose
trunk config lists its channels, so it saves and loads like any checkpoint.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.config import ConfigError
from engine.errors import FaceganError
from engine.modes import eval_mode

__all__ = ["SlimConfig", "AdaptiveL1", "slimmable_units", "bn_scales", "l1_of_scales", "sparsity", "prune_model",
           "count_parameters", "count_flops"]


@dataclass
class SlimConfig:
    target: float = 0.0  # share of trunk channels to make sparse (r); 0 switches slimming off
    adaptive: bool = True  # Zhao's (2020) adaptive lambda; False: network slimming's fixed lambda = l1
    l1: float = 0.0  # the fixed lambda, or the adaptive lambda's start
    step: str = "geometric"  # geometric: lambda *= or /= (1 + growth) | additive: lambda +-= delta (Zhao 2020)
    delta: float = 2e-5  # additive: the step of lambda; geometric: the first non-zero lambda
    growth: float = 0.25  # geometric: the relative change of lambda per check
    adjust_every: int = 50  # steps between sparsity checks (the seed checks once per epoch)
    tau: float = 0.05  # a channel is sparse when |gamma| < tau * max |gamma|
    scope: str = "global"  # global (max over the trunk) | per_layer (max within each layer, Zhao's rule)


def slimmable_units(model) -> list[nn.Sequential]:
    """The trunk's conv units (conv -> BN -> ReLU) in order; only AlexNet-BN is slimmable."""
    from attributes.trunks import AlexNetBN, ConvUnit

    if not isinstance(model.trunk, AlexNetBN):
        raise FaceganError(f"slimming supports the alexnet_bn trunk, not {type(model.trunk).__name__}")
    return [m for m in model.trunk.features if isinstance(m, ConvUnit)]


def bn_scales(model) -> list[torch.Tensor]:
    return [unit[1].weight for unit in slimmable_units(model)]


def l1_of_scales(model) -> torch.Tensor:
    return sum(w.abs().sum() for w in bn_scales(model))


@torch.no_grad()
def sparsity(model, tau: float = 0.05, scope: str = "global") -> float:
    """Share of trunk channels with |gamma| < tau * max |gamma| (over the trunk, or per layer)."""
    scales = [w.detach().abs().float() for w in bn_scales(model)]
    if scope == "global":
        peak = max(float(s.max()) for s in scales)
        sparse = sum(int((s < tau * peak).sum()) for s in scales)
    elif scope == "per_layer":
        sparse = sum(int((s < tau * s.max()).sum()) for s in scales)
    else:
        raise ConfigError(f"slim.scope must be 'global' or 'per_layer', not {scope!r}")
    return sparse / sum(s.numel() for s in scales)


class AdaptiveL1:
    """lambda and its adjustment (Zhao 2020, algorithm 5.6); its state goes into the checkpoint."""

    def __init__(self, config: SlimConfig, max_steps: int):
        if not 0.0 < config.target < 1.0:
            raise ConfigError(f"slim.target must be in (0, 1), got {config.target}")
        if config.adjust_every < 1:
            raise ConfigError("slim.adjust_every must be at least 1")
        if config.step not in ("geometric", "additive"):
            raise ConfigError(f"slim.step must be 'geometric' or 'additive', not {config.step!r}")
        if config.step == "geometric" and not (config.growth > 0 and config.delta > 0):
            raise ConfigError("the geometric slim.step needs slim.growth > 0 and slim.delta > 0")
        self.config = config
        self.checks = max(1, max_steps // config.adjust_every)  # N
        self.lam = float(config.l1)
        self.previous = 0.0  # P_{t-1}
        self.t = 0

    def observe(self, current: float) -> None:
        """One check (every `adjust_every` steps) with the current sparsity P_t."""
        self.t += 1
        cfg = self.config
        if cfg.adaptive:
            on_course = (cfg.target - self.previous) / max(1, self.checks - self.t + 1)
            if current - self.previous < on_course:
                self.lam = max(self.lam * (1 + cfg.growth), cfg.delta) if cfg.step == "geometric" else self.lam + cfg.delta
            elif current > cfg.target:
                self.lam = self.lam / (1 + cfg.growth) if cfg.step == "geometric" else max(0.0, self.lam - cfg.delta)
        self.previous = current

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "previous": self.previous, "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam, self.previous, self.t = float(state["lam"]), float(state["previous"]), int(state["t"])


# -- pruning -------------------------------------------------------------------------------------
@torch.no_grad()
def channels_to_keep(model, ratio: float, min_keep: float = 0.1) -> list[torch.Tensor]:
    """Per conv unit, the sorted indices of the channels that survive a global |gamma| threshold
    removing `ratio` of all trunk channels (each layer keeps at least `min_keep` of its own)."""
    if not 0.0 <= ratio < 1.0:
        raise FaceganError(f"the pruning ratio must be in [0, 1), got {ratio}")
    scales = [w.detach().abs().float() for w in bn_scales(model)]
    everything = torch.cat(scales)
    n_prune = int(round(ratio * everything.numel()))
    threshold = everything.sort().values[n_prune - 1] if n_prune > 0 else -1.0
    kept = []
    for s in scales:
        keep = torch.nonzero(s > threshold).flatten()
        floor = max(1, math.ceil(min_keep * s.numel()))
        if keep.numel() < floor:  # never empty a layer: keep its largest scales
            keep = s.topk(floor).indices.sort().values
        kept.append(keep)
    return kept


@torch.no_grad()
def prune_model(model, ratio: float, min_keep: float = 0.1):
    """A smaller copy of `model` without the trunk channels that a global |gamma| threshold removes.
    Returns (pruned model, channels per unit)."""
    from attributes.trunks import ConvUnit

    kept = channels_to_keep(model, ratio, min_keep)
    pruned = copy.deepcopy(model)
    units = slimmable_units(pruned)
    previous: torch.Tensor | None = None
    for unit, keep in zip(units, kept):
        conv, bn = unit[0], unit[1]
        weight = conv.weight[keep]
        if previous is not None:
            weight = weight[:, previous]
        new_conv = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding, bias=False)
        new_conv.weight.copy_(weight)
        new_bn = nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new_bn, name).copy_(getattr(bn, name)[keep])
        new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
        new_bn.train(bn.training)
        unit[0], unit[1] = new_conv, new_bn
        previous = keep
    assert isinstance(units[-1], ConvUnit)
    for head in pruned.heads.values():  # the heads read the last unit's channels
        conv = head.conv[0]
        new_conv = nn.Conv2d(len(previous), conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
        new_conv.weight.copy_(conv.weight[:, previous])
        head.conv[0] = new_conv
    channels = [len(k) for k in kept]
    pruned.trunk.out_channels = channels[-1]
    return pruned, channels


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(model, dataset: str) -> int:
    """FLOPs of one face through the trunk and `dataset`'s heads (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, model.input_size, model.input_size, device=next(model.parameters()).device)
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(x, [(dataset, 1)])
    return int(counter.get_total_flops())
