"""`attributes predict --out FILE.jsonl`: a record per photo as it goes; a killed run resumes
without doing any photo twice, and two torchrun processes share the photos; both end with the
records one uninterrupted run writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.assets import ASTRONAUT_JPG
from data_prep.folder_job import read_json_lines

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "tests" / "fixtures" / "legacy" / "attributes_run" / "checkpoints" / "latest.pt"


def _predict(src: Path, out: Path, processes: int = 1, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "FACEGAN_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("FACEGAN_FAULT", None)
    if fault:
        env["FACEGAN_FAULT"] = fault
    command = ["-m", "transfer.cli", "attributes", "predict", str(CHECKPOINT), str(src), "--out", str(out),
               "--batch-size", "2", "--threads", "1"]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *command]
    return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, list[dict]]:
    from PIL import Image

    src = tmp_path_factory.mktemp("photos")
    photo = Image.open(ASTRONAUT_JPG).convert("RGB")
    for k in range(6):
        photo.rotate(6 * k).save(src / f"photo{k}.jpg")
    (src / "zz_notes.txt").write_text("not an image\n")
    reference = src.parent / "reference.json"
    assert _predict(src, reference).returncode == 0
    return src, json.loads(reference.read_text())["images"]


def test_a_killed_run_resumes_to_the_records_of_an_uninterrupted_one(photos, tmp_path):
    src, reference = photos
    out = tmp_path / "predictions.jsonl"
    assert _predict(src, out, fault="manifest-append@2").returncode != 0
    assert len(read_json_lines(out)) == 2  # the first batch made it
    assert _predict(src, out).returncode == 0
    assert read_json_lines(out) == reference


def test_two_processes_share_the_photos(photos, tmp_path):
    src, reference = photos
    out = tmp_path / "predictions.jsonl"
    run = _predict(src, out, processes=2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert read_json_lines(out) == reference
    assert not list(tmp_path.glob("*.part*"))
