"""A checkpoint file that carries a pickled callable is refused by every command that opens
checkpoints, with a clear message, and its payload never runs."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from data_prep.assets import ASTRONAUT_JPG
from transfer.cli import main


class Payload:
    """Unpickling this calls os.makedirs(marker): a stand-in for any code a file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


@pytest.fixture()
def hostile(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "hostile.pt"
    torch.save({"modules": {"generator": Payload(marker)}, "run_config": {"gan": {}}}, path)
    return path, marker


TINY_ATTRIBUTES = ["--dataset", "synthetic", "--steps", "1", "--batch-size", "4", "--threads", "1", "--set", "datasets.synthetic.synthetic_identities=8",
                   "--set", "model.trunk.width=0.125", "--set", "model.head.conv_channels=8",
                   "--set", "model.head.reduce_channels=8", "--set", "model.head.feature_dim=8",
                   "--set", "trainer.progress=false", "--set", "trainer.tensorboard=false"]


def _commands(path, tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir(exist_ok=True)
    shutil.copy(ASTRONAUT_JPG, folder / "face.jpg")
    out = str(tmp_path / "out")
    checkpoint = str(path)
    return {
        "gan sample": ["gan", "sample", checkpoint, "--out", out],
        "gan eval": ["gan", "eval", checkpoint, "--real", "synthetic", "-n", "2"],
        "sr apply": ["sr", "apply", checkpoint, str(folder), out, "--no-progress"],
        "sr eval": ["sr", "eval", checkpoint, "--folder", str(folder), "--out", out],
        "attributes eval": ["attributes", "eval", checkpoint, "--out", out],
        "attributes predict": ["attributes", "predict", checkpoint, str(folder)],
        "attributes explain": ["attributes", "explain", checkpoint, str(folder), "--out", out],
        "attributes verify": ["attributes", "verify", checkpoint, "--out", out],
        "attributes prune": ["attributes", "prune", checkpoint, "--out", out, "--no-progress"],
        "attributes distill": ["attributes", "distill", checkpoint, "--out", out, "--no-progress"],
        "attributes train --init-from": ["attributes", "train", "--out", str(tmp_path / "init"), "--init-from", checkpoint,
                                         *TINY_ATTRIBUTES],
        "attributes train init_weights": ["attributes", "train", "--out", str(tmp_path / "weights"),
                                          "--set", f"init_weights={checkpoint}", *TINY_ATTRIBUTES],
        "attributes train --teacher": ["attributes", "train", "--out", str(tmp_path / "teacher"), "--teacher", checkpoint,
                                       *TINY_ATTRIBUTES],
        "export": ["export", checkpoint, "--out", str(tmp_path / "model.onnx"), "--time", "0"],
        "serve": ["serve", "--attributes", checkpoint, "--port", "1"],
    }


COMMANDS = ["gan sample", "gan eval", "sr apply", "sr eval", "attributes eval", "attributes predict", "attributes explain",
            "attributes verify", "attributes prune", "attributes distill", "attributes train --init-from",
            "attributes train init_weights", "attributes train --teacher", "export", "serve"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_checkpoint_that_could_run_code(hostile, tmp_path, capsys, command):
    path, marker = hostile
    needs = {"export": ("onnxruntime", "export"), "serve": ("gradio", "app")}
    if command in needs:
        pytest.importorskip(needs[command][0], reason=f"the {needs[command][1]} extra is not installed")
    commands = _commands(path, tmp_path)
    assert set(commands) == set(COMMANDS)
    code = main(commands[command])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "could run code" in err and "Traceback" not in err
    assert not marker.exists(), "the payload ran"


def test_resume_refuses_a_hostile_latest_checkpoint_without_running_it(hostile, tmp_path, capsys):
    path, marker = hostile
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(path, run / "checkpoints" / "latest.pt")
    code = main(["gan", "train", "--model", "dcgan", "--image-size", "32", "--out", str(run), "--resume", "--steps", "2",
                 "--batch-size", "4", "--threads", "1", "--set", "data.synthetic_identities=4",
                 "--set", "gan.dcgan.g_channels=16", "--set", "gan.dcgan.d_channels=16", "--set", "trainer.progress=false"])
    err = capsys.readouterr().err
    assert code == 2 and "could run code" in err and "latest.pt" in err
    assert not marker.exists()
    assert (run / "checkpoints" / "latest.pt").read_bytes() == path.read_bytes()  # left as it was
