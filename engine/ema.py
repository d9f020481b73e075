"""Exponential moving average of a module's weights (used for GAN generators)."""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA(nn.Module):
    """A frozen copy of `source` whose parameters track an exponential moving average.

    Buffers (BatchNorm statistics) are copied, not averaged: an average of running
    statistics is not the statistics of the averaged weights.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as TensorFlow's
    ExponentialMovingAverage with num_updates): with a fixed 0.999, 37% of the average would
    still be the random initialisation after 1,000 steps, and short runs would sample noise.
    """

    def __init__(self, source: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(source).eval().requires_grad_(False)

    def decay_at(self, num_updates: int) -> float:
        return min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))

    @torch.no_grad()
    def update(self, source: nn.Module, num_updates: int) -> None:
        """Fold in `source`'s weights; `num_updates` counts earlier updates (the trainer's step),
        so a resumed run continues the warm-up exactly without extra state."""
        source = getattr(source, "module", source)  # unwrap DistributedDataParallel
        decay = self.decay_at(num_updates)
        ema_params = dict(self.module.named_parameters())
        pairs = [(ema_params[name], param.detach()) for name, param in source.named_parameters()]
        if pairs:  # one batched lerp over every tensor: the same arithmetic as a loop, a fraction of its calls
            torch._foreach_lerp_([ema for ema, _ in pairs], [param for _, param in pairs], 1.0 - decay)
        ema_buffers = dict(self.module.named_buffers())
        for name, buffer in source.named_buffers():
            ema_buffers[name].copy_(buffer)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
