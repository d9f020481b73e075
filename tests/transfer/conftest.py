"""Small models made once per session for the export and serve tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from transfer.cli import main


@pytest.fixture(scope="session")
def began_checkpoint(tmp_path_factory) -> Path:
    """A BEGAN generator of 32 px after 2 steps: untrained, but its faces differ from seed to seed."""
    out = tmp_path_factory.mktemp("began") / "run"
    assert main(["gan", "train", "--model", "began", "--image-size", "32", "--out", str(out), "--steps", "2",
                 "--batch-size", "4", "--threads", "1", "--set", "data.synthetic_identities=4",
                 "--set", "data.synthetic_images_per_identity=2", "--set", "gan.began.hidden_channels=16",
                 "--set", "trainer.progress=false", "--set", "trainer.tensorboard=false",
                 "--set", "gan.num_samples=4"]) == 0
    return out / "checkpoints" / "latest.pt"


@pytest.fixture(scope="session")
def sa_ensemble_checkpoint(tmp_path_factory) -> Path:
    """Two tiny SA-softmax attribute networks on the built-in synthetic faces, one checkpoint."""
    from tests.attributes.conftest import train_tiny

    out = train_tiny(tmp_path_factory.mktemp("sa_ensemble"), "sa", 4, "--members", "2", "--sa-softmax",
                     "--set", "sa.plain_epochs=0")
    return out / "checkpoints" / "latest.pt"
