"""A tiny attribute run on the built-in synthetic faces, through the CLI, for the trainer tests."""
from __future__ import annotations

import pytest

from transfer.cli import main

TINY = [
    "--set", "datasets.synthetic.synthetic_identities=40",
    "--set", "model.trunk.width=0.125", "--set", "model.head.conv_channels=16", "--set", "model.head.reduce_channels=8",
    "--set", "model.head.feature_dim=32", "--set", "trainer.eval_every=10", "--set", "trainer.checkpoint_every=10",
    "--set", "trainer.progress=false", "--set", "trainer.tensorboard=false", "--set", "trainer.ema_decay=0.9",
]


def train_tiny(tmp_path, name, steps, *extra):
    """Train `steps` steps of batch 16 into tmp_path/name (data and cache shared within tmp_path)."""
    out = tmp_path / name
    data = tmp_path / "synthetic"
    argv = ["attributes", "train", "--dataset", "synthetic", "--out", str(out), "--steps", str(steps), "--batch-size", "16",
            "--threads", "1", "--set", f"datasets.synthetic.root={data}", "--set", f"datasets.synthetic.cache_dir={tmp_path / 'cache'}",
            *TINY, *extra]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def train_attributes():
    return train_tiny
