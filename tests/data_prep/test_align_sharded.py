"""`facegan align` under torchrun: two CPU processes, each a deterministic shard of whole batches
and its own manifest part, merged by rank 0 into what one process writes: the same files, the
same manifest rows and byte-identical faces as one process on as many threads per process;
against one process on 2 threads (other float summation orders in the convolutions), manifest
numbers within 1e-4 and faces within one grey level. A run whose ranks were killed resumes each
rank's own shard."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.align.folder import read_manifest
from tests.data_prep.test_align_folder import make_small_folder

ROOT = Path(__file__).resolve().parents[2]


def _align(src: Path, dst: Path, processes: int, threads: int, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "FACEGAN_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    env.pop("FACEGAN_FAULT", None)
    if fault:
        env["FACEGAN_FAULT"] = fault
    command = ["-m", "transfer.cli", "align", str(src), str(dst), "--quiet", "--device", "cpu", "--threads",
               str(threads), "--batch-size", "2", "--output-size", "64"]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *command]
    return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut_rgb) -> tuple[Path, Path, Path]:
    """Seven rotated astronauts and a broken file (4 batches of 2), aligned by one process on
    1 thread and on 2 threads."""
    root = tmp_path_factory.mktemp("sharded")
    src = root / "src"
    make_small_folder(src, astronaut_rgb, count=7)
    for threads in (1, 2):
        single = _align(src, root / f"one-{threads}", processes=1, threads=threads)
        assert single.returncode == 0, single.stderr
    return src, root / "one-1", root / "one-2"


def _same_as_one_process(one: Path, other: Path) -> None:
    rows_one, rows_other = read_manifest(one / "manifest.csv"), read_manifest(other / "manifest.csv")
    assert rows_other == rows_one  # every field, in input order
    assert sorted(p.name for p in other.glob("*.png")) == sorted(p.name for p in one.glob("*.png"))
    for face in one.glob("*.png"):
        assert (other / face.name).read_bytes() == face.read_bytes(), face.name
    assert not list(other.glob("manifest.part*")), "the parts are merged and removed"


def _close_to(one: Path, other: Path) -> None:
    import numpy as np
    from PIL import Image

    for a, b in zip(read_manifest(one / "manifest.csv"), read_manifest(other / "manifest.csv"), strict=True):
        for column, value in a.items():
            if column in ("score", "box", "landmarks", "transform", "fit_rms") and value:
                np.testing.assert_allclose([float(v) for v in b[column].split()], [float(v) for v in value.split()],
                                           atol=1e-4, rtol=1e-5, err_msg=f"{a['source']} {column}")
            else:
                assert b[column] == value, (a["source"], column)
    for face in one.glob("*.png"):
        difference = np.abs(np.asarray(Image.open(face), dtype=int) - np.asarray(Image.open(other / face.name), dtype=int))
        assert difference.max() <= 1, face.name


def test_two_processes_write_what_one_process_writes(photos, tmp_path):
    src, one, one_on_two_threads = photos
    two = tmp_path / "two"
    run = _align(src, two, processes=2, threads=1)
    assert run.returncode == 0, run.stderr[-3000:]
    _same_as_one_process(one, two)
    assert len(read_manifest(two / "manifest.csv")) == 8
    _close_to(one_on_two_threads, two)


def test_killed_ranks_resume_their_own_shards(photos, tmp_path):
    src, one, _ = photos
    two = tmp_path / "two"
    # The first rank to reach its 2nd batch dies there, and torchrun then stops the other, which
    # may or may not have recorded its own first batch by then.
    killed = _align(src, two, processes=2, threads=1, fault="manifest-append@2")
    assert killed.returncode != 0
    parts = sorted(two.glob("manifest.part*-of-002.csv"))
    assert [p.name for p in parts] == ["manifest.part000-of-002.csv", "manifest.part001-of-002.csv"]
    names = sorted(p.name for p in src.iterdir())
    batches = [names[k:k + 2] for k in range(0, len(names), 2)]  # batch j belongs to rank j mod 2
    recorded = {}
    for rank, part in enumerate(parts):
        rows = [row["source"] for row in read_manifest(part)]
        assert rows in ([], batches[rank]), (rank, rows)  # at most its first batch, whole, nobody else's
        recorded.update({row["output"]: (two / row["output"]).stat().st_mtime_ns for row in read_manifest(part)
                         if row["output"]})
    assert recorded, "no rank recorded a batch before the kill"
    rerun = _align(src, two, processes=2, threads=1)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _same_as_one_process(one, two)
    # Recorded faces are kept, not written again.
    assert {name: (two / name).stat().st_mtime_ns for name in recorded} == recorded
