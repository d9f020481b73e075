"""A real SIGKILL per command family, at a named fault point (engine.faults), then a rerun: the
outputs equal an uninterrupted run's, with nothing lost and nothing doubled.

Each killed run is a subprocess (`FACEGAN_FAULT` makes it SIGKILL itself at the point); the
uninterrupted reference and the rerun run in this process. benchmarks/crash_resume.py does the
same at random times and at every point, with more kills."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.checkpoint import load_checkpoint, training_state_differences
from transfer.cli import main

pytestmark = pytest.mark.slow


def killed(argv: list[str], point: str) -> None:
    """Run `facegan ARGV` in a subprocess that SIGKILLs itself at fault point `point`."""
    env = {**os.environ, "FACEGAN_FAULT": point, "FACEGAN_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "transfer.cli", *argv], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == -signal.SIGKILL, f"not killed at {point}: {result.returncode}\n{result.stderr[-2000:]}"


def same_weights(a: Path, b: Path) -> None:
    compared, differences = training_state_differences(*(load_checkpoint(run / "checkpoints" / "latest.pt")
                                                          for run in (a, b)))
    assert compared > 0 and not differences, differences


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("split") == "train"]


GAN = ["gan", "train", "--model", "dcgan", "--image-size", "32", "--steps", "6", "--batch-size", "4", "--deterministic",
       "--threads", "1", "--set", "data.synthetic_identities=6", "--set", "data.synthetic_images_per_identity=2",
       "--set", "gan.dcgan.g_channels=16", "--set", "gan.dcgan.d_channels=16", "--set", "trainer.checkpoint_every=2",
       "--set", "trainer.log_every=1", "--set", "trainer.sample_every=0", "--set", "trainer.progress=false",
       "--set", "trainer.tensorboard=false"]
SR = ["sr", "train", "--steps", "6", "--batch-size", "4", "--deterministic", "--threads", "1",
      "--set", "sr.model.input_size=8", "--set", "sr.model.output_size=32", "--set", "sr.model.channels=8",
      "--set", "sr.model.num_blocks=1", "--set", "sr.model.min_channels=4", "--set", "sr.model.critic_channels=4",
      "--set", "sr.pretrain_steps=3", "--set", "data.synthetic_identities=8", "--set", "data.synthetic_images_per_identity=2",
      "--set", "data.eval_images=4", "--set", "trainer.checkpoint_every=2", "--set", "trainer.log_every=1",
      "--set", "trainer.eval_every=0", "--set", "trainer.sample_every=0", "--set", "trainer.progress=false",
      "--set", "trainer.tensorboard=false"]
ATTRIBUTES = ["attributes", "train", "--dataset", "synthetic", "--steps", "6", "--batch-size", "8", "--deterministic",
              "--threads", "1", "--set", "datasets.synthetic.synthetic_identities=12", "--set", "model.trunk.width=0.125",
              "--set", "model.head.conv_channels=8", "--set", "model.head.reduce_channels=8",
              "--set", "model.head.feature_dim=16", "--set", "trainer.checkpoint_every=2", "--set", "trainer.eval_every=3",
              "--set", "trainer.log_every=1", "--set", "trainer.progress=false", "--set", "trainer.tensorboard=false"]


@pytest.mark.parametrize("family, argv, point", [
    ("gan", GAN, "checkpoint-rename@2"),  # the step-4 checkpoint is written but not renamed into place
    ("sr", SR, "trainer-step@3"),  # step 3 is done and logged, the step-4 checkpoint not written
    ("attributes", ATTRIBUTES, "checkpoint-rotate@2"),  # latest.pt is previous.pt, the new one not in place
])
def test_a_training_killed_at_a_fault_point_resumes_to_the_same_weights(tmp_path, family, argv, point):
    reference, run = tmp_path / "reference", tmp_path / "run"
    data = ["--set", f"{'datasets.synthetic' if family == 'attributes' else 'data'}.root={tmp_path / 'synthetic'}"]
    assert main([*argv, *data, "--out", str(reference)]) == 0
    killed([*argv, *data, "--out", str(run)], point)
    assert not (run / "checkpoints" / "latest.pt").exists() or load_checkpoint(run / "checkpoints" / "latest.pt")["global_step"] < 6
    assert main([*argv, *data, "--out", str(run), "--resume"]) == 0
    same_weights(reference, run)
    assert logged_steps(run) == logged_steps(reference) == list(range(1, 7))
    assert not list((run / "checkpoints").glob(".*.tmp"))


def _faces(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")


def _folder_state(folder: Path, ignore: tuple[str, ...]) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ignore}


def test_sr_apply_killed_between_outputs_and_their_rows_finishes_once(tmp_path):
    checkpoint = tmp_path / "model" / "checkpoints" / "latest.pt"
    assert main([*SR, "--steps", "1", "--set", f"data.root={tmp_path / 'synthetic'}", "--out", str(tmp_path / "model")]) == 0
    _faces(tmp_path / "faces", 7)
    def argv(dst):
        return ["sr", "apply", str(checkpoint), str(tmp_path / "faces"), str(dst), "--batch-size", "2", "--no-progress",
                "--threads", "1"]

    assert main(argv(tmp_path / "reference")) == 0
    killed(argv(tmp_path / "run"), "manifest-append@3")  # batch 3's files are written, its rows not
    # A random kill can also land inside an output's atomic write, which leaves its temporary file.
    (tmp_path / "run" / ".06.png.k3x9q2aa.tmp").write_bytes(b"half a PNG")
    assert main(argv(tmp_path / "run")) == 0
    ignore = ("sr_apply.json",)  # it records the run's own timings
    assert _folder_state(tmp_path / "run", ignore) == _folder_state(tmp_path / "reference", ignore)
    rows = (tmp_path / "run" / "labels.csv").read_text().splitlines()
    assert len(rows) == 8 and len(set(rows)) == 8  # the header and one row per face, none doubled


def test_a_cache_build_killed_after_a_shard_finishes_with_the_same_bytes(tmp_path):
    from data_prep.synthetic import SyntheticConfig, generate_synthetic

    synth = generate_synthetic(tmp_path / "synthetic", SyntheticConfig(num_identities=6, images_per_identity=2,
                                                                       image_size=32), progress=False)
    argv = ["data", "cache", "--dataset", "synthetic", "--root", str(synth), "--size", "16", "--no-align",
            "--shard-size", "5", "--workers", "0", "--no-progress"]
    assert main([*argv, str(tmp_path / "reference")]) == 0
    killed([*argv, str(tmp_path / "run")], "cache-shard@2")  # shard 1 is on disk, not yet in the progress file
    assert main([*argv, str(tmp_path / "run")]) == 0
    reference = json.loads((tmp_path / "reference" / "index.json").read_text())
    rerun = json.loads((tmp_path / "run" / "index.json").read_text())
    for index in (reference, rerun):
        index.pop("created", None)  # when it was built
        index.get("build", {}).pop("created", None)
    assert rerun == reference
    ignore = ("index.json",)
    assert _folder_state(tmp_path / "run", ignore) == _folder_state(tmp_path / "reference", ignore)


def test_a_study_killed_inside_a_cell_gives_the_same_results(tmp_path):
    from engine.config import from_dict, save_config
    from transfer.config import StudyConfig

    domain = {"source": "synthetic", "synthetic_identities": 30, "test_fraction": 0.3, "val_fraction": 0.1,
              "root": str(tmp_path / "synthetic")}
    study = from_dict(StudyConfig, {
        "name": "tiny", "domains": {"studio": {**domain, "synthetic_domain": "studio"},
                                    "wild": {**domain, "synthetic_domain": "wild"}},
        "directions": ["studio->wild"], "tasks": ["Male"], "seeds": [0], "arms": ["source_only", "target_only"],
        "model": {"trunk": {"name": "alexnet_bn", "input_size": 64, "width": 0.125},
                  "head": {"conv_channels": 8, "reduce_channels": 8, "feature_dim": 16}},
        "budget": {"steps": 6, "batch_size": 16, "ema_decay": 0.5, "threads": 1}, "optim": {"warmup_steps": 2},
        "stats": {"n_boot": 100}, "domain_gap_faces": 0,
    })
    preset = tmp_path / "study.yaml"
    save_config(study, preset)
    argv = ["transfer", "run", str(preset), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "reference")]) == 0
    killed([*argv, "--out", str(tmp_path / "run")], "trainer-step@9")  # inside the second cell
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    reference, rerun = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("reference", "run"))
    for results in (reference, rerun):
        results.pop("timings")
    assert rerun == reference
