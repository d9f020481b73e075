import random

import numpy as np
import torch

from engine.checkpoint import atomic_save, load_checkpoint
from engine.reproducibility import capture_rng_state, derive_seed, restore_rng_state, seed_everything


def _draw():
    return (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_seed_everything_reproduces_all_streams():
    seed_everything(123)
    first = _draw()
    seed_everything(123)
    assert _draw() == first
    seed_everything(124)
    assert _draw() != first


def test_rng_state_survives_a_checkpoint_roundtrip(tmp_path):
    seed_everything(5)
    _draw()
    atomic_save({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = [_draw() for _ in range(3)]
    seed_everything(999)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert [_draw() for _ in range(3)] == expected


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(1, "worker", 0) == derive_seed(1, "worker", 0)
    assert derive_seed(1, "worker", 0) != derive_seed(1, "worker", 1)
    assert derive_seed(1, "worker", 0) != derive_seed(2, "worker", 0)
    # Must not depend on Python's per-process hash salt: a fixed known value.
    assert derive_seed(0) == derive_seed(0) and 0 <= derive_seed(0) < 2**63
