"""`facegan sr apply` under torchrun: two CPU processes, each its own shard of whole batches and
its own manifest part; killed at their second batch and run again, they leave what one process
leaves (the same labels.csv, byte-identical images, the same skipped.csv)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from data_prep.assets import ASTRONAUT_JPG
from gan.sr.apply import read_manifest

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "tests" / "fixtures" / "legacy" / "sr_run" / "checkpoints" / "latest.pt"


def _apply(src: Path, dst: Path, processes: int, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "FACEGAN_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("FACEGAN_FAULT", None)
    if fault:
        env["FACEGAN_FAULT"] = fault
    command = ["-m", "transfer.cli", "sr", "apply", str(CHECKPOINT), str(src), str(dst), "--batch-size", "2",
               "--no-progress", "--threads", "1"]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *command]
    return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_killed_ranks_resume_and_merge_into_what_one_process_writes(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    photo = Image.open(ASTRONAUT_JPG).convert("RGB")
    for k in range(9):
        photo.rotate(10 * k).resize((64, 64)).save(src / ("sub" if k % 3 == 0 else "") / f"face{k}.png")
    (src / "notes.txt").write_text("not an image\n")
    one, two = tmp_path / "one", tmp_path / "two"
    assert _apply(src, one, 1).returncode == 0
    # The first rank to append its 3rd row dies there, and torchrun stops the other wherever it is.
    killed = _apply(src, two, 2, fault="manifest-append@3")
    assert killed.returncode != 0
    parts = sorted(two.glob("labels.part*-of-002.csv"))
    assert parts, "no rank recorded a row before the kill"
    kept = {}
    for part in parts:
        for row in read_manifest(part):
            kept[row["path"]] = (two / row["path"]).stat().st_mtime_ns
    assert kept
    rerun = _apply(src, two, 2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (two / "labels.csv").read_text() == (one / "labels.csv").read_text()
    assert (two / "skipped.csv").read_text() == (one / "skipped.csv").read_text()
    images = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert len(images) == 9 and images == sorted(p.relative_to(two) for p in two.rglob("*.png"))
    for image in images:
        assert (two / image).read_bytes() == (one / image).read_bytes(), image
    assert not list(two.glob("*.part*")), "the parts are merged and removed"
    assert {path: (two / path).stat().st_mtime_ns for path in kept} == kept, "recorded outputs are not written again"
    shutil.rmtree(tmp_path)
