"""The GAN steps under two-process DDP (torchrun, gloo): the gradient penalty's double backward,
several discriminator forwards per backward and BEGAN's k_t all work, replicas stay identical,
and each rank draws its own noise."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_gan_worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gan_steps_under_two_process_ddp(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), str(tmp_path)]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("wgan-gp", "nonsaturating", "began"):
        rank0 = torch.load(tmp_path / f"{name}_rank0.pt")
        rank1 = torch.load(tmp_path / f"{name}_rank1.pt")
        for key, value in rank0.items():
            if key == "noise":
                assert not torch.equal(value, rank1[key]), f"{name}: both ranks drew the same noise"
            elif "running_" in key or "num_batches" in key:
                continue  # BatchNorm statistics are per rank (broadcast_buffers=False)
            else:
                assert torch.equal(value, rank1[key]), f"{name}: replicas diverged at {key}"
    began = torch.load(tmp_path / "began_rank0.pt")
    assert 0.0 <= float(began["k"]) <= 1.0 and float(began["k"]) != 0.2  # k_t moved, the same on both ranks
