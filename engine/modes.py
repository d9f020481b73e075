"""Switching a module to eval mode for a moment without losing its training state."""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block, the module's own mode again after it (also on an error).

    Sampling, feature extraction and measuring must not update BatchNorm running statistics:
    they are training state that goes into checkpoints, and a resumed run must not depend on
    when a grid was drawn or a feature computed. Dropout must be off for the same reason.
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
