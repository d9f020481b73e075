"""`facegan sr train | apply | eval` end to end on the built-in synthetic faces."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from data_prep.datasets.folder_csv import load_folder_csv
from engine.checkpoint import load_checkpoint
from gan.sr.apply import read_manifest
from transfer.cli import main


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    """A tiny x4 (8 -> 32 px) SR run: 3 pixel steps then 2 adversarial ones, with a degradation."""
    root = tmp_path_factory.mktemp("sr")
    out = root / "run"
    args = ["sr", "train", "--out", str(out), "--steps", "5", "--batch-size", "4", "--threads", "1",
            "--set", "sr.model.input_size=8", "--set", "sr.model.output_size=32", "--set", "sr.model.channels=8",
            "--set", "sr.model.num_blocks=1", "--set", "sr.model.min_channels=4", "--set", "sr.model.critic_channels=4",
            "--set", "sr.pretrain_steps=3", "--set", "sr.degradation.jpeg_prob=0.5",
            "--set", "data.root=" + str(root / "synthetic"), "--set", "data.synthetic_identities=8",
            "--set", "data.synthetic_images_per_identity=2", "--set", "data.eval_images=4",
            "--set", "data.test_fraction=0.25", "--set", "data.val_fraction=0.25",
            "--set", "trainer.progress=false", "--set", "trainer.log_every=1", "--set", "trainer.eval_every=5", "--set", "trainer.sample_every=5"]
    assert main(args) == 0
    return root, out


def test_train_writes_a_checkpoint_with_the_degradation_and_both_phases(sr_run):
    _, out = sr_run
    state = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert state["global_step"] == 5
    sr = state["run_config"]["sr"]
    assert sr["degradation"]["jpeg_prob"] == 0.5 and sr["pretrain_steps"] == 3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss_pixel" in r]
    assert train_rows, "no training metrics logged"
    # The critic's loss appears only once the adversarial phase has begun (step index >= 3).
    assert all("d_loss" not in r for r in train_rows if r["step"] <= 3)
    assert any("d_loss" in r for r in train_rows if r["step"] > 3)
    assert any("psnr_y" in r for r in rows)  # the periodic evaluation ran


def test_apply_on_a_folder_skips_bad_files_and_resumes(sr_run, tmp_path):
    _, out = sr_run
    checkpoint = out / "checkpoints" / "latest.pt"
    src = tmp_path / "faces"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, size in enumerate((8, 20, 31)):  # the model's LR size and two others (resized to it)
        Image.fromarray(rng.integers(0, 256, (size, size + i, 3), dtype=np.uint8)).save(src / "sub" / f"{i}.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (src / "notes.txt").write_text("not an image")
    dst = tmp_path / "sr"
    assert main(["sr", "apply", str(checkpoint), str(src), str(dst), "--no-progress", "--threads", "1"]) == 0
    rows = read_manifest(dst / "labels.csv")
    assert sorted(r["path"] for r in rows) == ["sub/0.png", "sub/1.png", "sub/2.png"]
    for row in rows:
        assert Image.open(dst / row["path"]).size == (32, 32)
    with open(dst / "skipped.csv", newline="") as handle:
        skipped = {r["source"].split("/")[-1] for r in csv.DictReader(handle)}
    assert skipped == {"broken.jpg", "notes.txt"}

    # A lost output is redone on rerun, and only it.
    first = (dst / "sub" / "1.png").stat().st_mtime_ns
    (dst / "sub" / "0.png").unlink()
    assert main(["sr", "apply", str(checkpoint), str(src), str(dst), "--no-progress", "--threads", "1"]) == 0
    info = json.loads((dst / "sr_apply.json").read_text())
    assert info["last_run"]["written"] == 1 and info["last_run"]["already_done"] == 2
    assert (dst / "sub" / "0.png").is_file() and (dst / "sub" / "1.png").stat().st_mtime_ns == first
    assert len(read_manifest(dst / "labels.csv")) == 3


def test_apply_on_a_dataset_keeps_the_labels_and_reads_back(sr_run, tmp_path):
    root, out = sr_run
    from data_prep.synthetic import load_synthetic

    dst = tmp_path / "sr-dataset"
    assert main(["sr", "apply", str(out / "checkpoints" / "latest.pt"), str(dst), "--dataset", "synthetic",
                 "--root", str(root / "synthetic"), "--no-progress", "--threads", "1",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    back = load_folder_csv(dst)
    source = load_synthetic(root / "synthetic")
    by_source = {str(r.path): r for r in source.records}
    rows = read_manifest(dst / "labels.csv")
    assert len(back.records) == len(rows) > 0
    assert [t.name for t in back.schema] == [t.name for t in source.schema]
    for record, row in zip(back.records, rows):
        original = next(v for k, v in by_source.items() if k.endswith(row["source"]))
        assert record.identity == original.identity
        assert record.labels == original.labels


def test_eval_reports_every_metric_beside_bicubic_and_writes_strips(sr_run, tmp_path):
    root, out = sr_run
    report = tmp_path / "eval"
    assert main(["sr", "eval", str(out / "checkpoints" / "latest.pt"), "--dataset", "synthetic", "--root",
                 str(root / "synthetic"), "--split", "test", "-n", "4", "--out", str(report), "--no-lpips",
                 "--cache-dir", str(tmp_path / "cache"), "--strips", "3"]) == 0
    result = json.loads((report / "sr_eval.json").read_text())
    for name in ("psnr_rgb", "psnr_y"):
        entry = result["metrics"][name]
        assert {"sr", "bicubic"} <= set(entry) and np.isfinite(entry["sr"]) and np.isfinite(entry["bicubic"])
    data = result["protocol"]["data"]
    assert result["protocol"]["crop_border"] == 4 and data["faces"] == 4
    # The same people split as training (2 of 8 synthetic people held out), not the dataset's own.
    assert data["split_rule"].startswith("the training run's identity-disjoint split")
    assert "lpips" in result["skipped_metrics"]
    assert Image.open(report / "strips.png").size[0] > 4 * 32
    assert "bicubic" in (report / "sr_eval.md").read_text()


def test_apply_refuses_a_non_sr_checkpoint(tmp_path, capsys):
    import torch

    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    (tmp_path / "in").mkdir()
    assert main(["sr", "apply", str(tmp_path / "other.pt"), str(tmp_path / "in"), str(tmp_path / "out"),
                 "--no-progress"]) == 2
    assert "error" in capsys.readouterr().err.lower()
