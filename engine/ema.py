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
    """

    def __init__(self, source: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(source).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        source = getattr(source, "module", source)  # unwrap DistributedDataParallel
        ema_params = dict(self.module.named_parameters())
        for name, param in source.named_parameters():
            ema_params[name].lerp_(param.detach(), 1.0 - self.decay)
        ema_buffers = dict(self.module.named_buffers())
        for name, buffer in source.named_buffers():
            ema_buffers[name].copy_(buffer)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
