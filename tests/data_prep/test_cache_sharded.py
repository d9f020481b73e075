"""`facegan data cache` under torchrun: two CPU processes build alternate shards and rank 0 writes
the index; killed after their second shard and run again, they leave the cache one process
builds (byte-identical shards, the same index but for its date)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cache(root: Path, out: Path, processes: int, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "FACEGAN_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("FACEGAN_FAULT", None)
    if fault:
        env["FACEGAN_FAULT"] = fault
    command = ["-m", "transfer.cli", "data", "cache", str(out), "--dataset", "synthetic", "--root", str(root),
               "--size", "32", "--no-align", "--shard-size", "8", "--workers", "0", "--no-progress", "--threads", "1"]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *command]
    return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_killed_ranks_resume_and_build_the_cache_one_process_builds(tmp_path):
    from data_prep.synthetic import SyntheticConfig, generate_synthetic

    root = generate_synthetic(tmp_path / "synthetic", SyntheticConfig(num_identities=12, images_per_identity=2,
                                                                      image_size=32), progress=False)
    one, two = tmp_path / "one", tmp_path / "two"
    assert _cache(root, one, 1).returncode == 0
    # 48 faces, 6 shards of 8. The first rank to finish its 2nd shard dies before recording it,
    # and torchrun stops the other, which may or may not have recorded a shard by then.
    killed = _cache(root, two, 2, fault="cache-shard@2")
    assert killed.returncode != 0 and not (two / "index.json").exists()
    parts = {rank: two / f"progress.part{rank:03d}-of-002.json" for rank in range(2)}
    recorded = {rank: sorted(int(k) for k in json.loads(part.read_text())["shards"]) if part.is_file() else []
                for rank, part in parts.items()}
    assert recorded[0] in ([], [0]) and recorded[1] in ([], [1]), recorded  # each rank only its own first shard
    assert recorded[0] or recorded[1], "no rank recorded a shard before the kill"
    kept = {j: (two / f"images-{j:05d}.u8").stat().st_mtime_ns for shards in recorded.values() for j in shards}
    rerun = _cache(root, two, 2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    shards = sorted(p.name for p in one.glob("images-*.u8"))
    assert len(shards) == 6 and shards == sorted(p.name for p in two.glob("images-*.u8"))
    for name in shards:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    index_one, index_two = (json.loads((folder / "index.json").read_text()) for folder in (one, two))
    index_one["build"].pop("created"), index_two["build"].pop("created")
    assert index_two == index_one
    assert not list(two.glob("progress*"))
    # Recorded shards are kept, not built again.
    assert {j: (two / f"images-{j:05d}.u8").stat().st_mtime_ns for j in kept} == kept
