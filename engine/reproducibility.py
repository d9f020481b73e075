"""Seeding and RNG-state capture, so that a run (and a resumed run) can be reproduced."""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "capture_rng_state", "restore_rng_state", "derive_seed"]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels.

    Deterministic mode trades speed for bit-exact reruns: cuDNN autotuning is switched off and
    torch raises on ops that have no deterministic implementation.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS reads this at handle creation; harmless on the CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def derive_seed(seed: int, *keys: Any) -> int:
    """A stable child seed for a named sub-stream (a worker, a split, a shard).

    Python's hash() is salted per process, so the keys are mixed with a fixed-width digest.
    """
    import hashlib

    digest = hashlib.sha256(repr((seed,) + keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def capture_rng_state() -> dict[str, Any]:
    """Every RNG state a training step may draw from, as a checkpointable dict of tensors."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    np.random.set_state(_numpy_state_from_tensors(state["numpy"]))
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(state: Any) -> tuple:
    # A checkpoint round trip may turn the nested tuples of random.getstate() into lists.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _numpy_state_to_tensors(state: tuple) -> dict[str, Any]:
    # weights_only loading refuses numpy arrays, so the MT19937 key travels as a tensor.
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_from_tensors(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
