"""Two CPU processes under torchrun (gloo) keep identical replicas and match one process
that trains on the same global batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.distributed import ResumableSampler

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(args, out, timeout=240, *mode):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run(args + [str(WORKER), str(out), *mode], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path / "ddp")
    _run([sys.executable], tmp_path / "single")
    rank0 = torch.load(tmp_path / "ddp" / "weights_rank0.pt")
    rank1 = torch.load(tmp_path / "ddp" / "weights_rank1.pt")
    single = torch.load(tmp_path / "single" / "weights_rank0.pt")
    torch.manual_seed(0)  # the same initial weights as LinearStep
    initial = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"replicas diverged at {key}"
        assert torch.allclose(rank0[key], single[key], atol=1e-5), f"DDP differs from one process at {key}"
    moved = max(float((single[k] - v).abs().max()) for k, v in initial.state_dict().items())
    assert moved > 1e-3, "training must have changed the weights for the comparison to mean anything"


@pytest.mark.slow
def test_ranks_of_unequal_speed_stop_a_timed_run_together_with_one_schedule(tmp_path):
    """A time budget is judged on the slowest rank's clock: both ranks stop after the same step
    (one stopping alone would hang the other) and a schedule that follows the clock gives them
    the same rates, so the replicas stay identical."""
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path, 240, "timed")
    results = [(tmp_path / f"result_rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert results[0] == results[1] and results[0][0] == "time_budget" and int(results[0][1]) > 5
    assert float(results[0][2]) < 0.01  # the cosine ended with the budget
    rank0 = torch.load(tmp_path / "weights_rank0.pt")
    rank1 = torch.load(tmp_path / "weights_rank1.pt")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"replicas diverged at {key}"


@pytest.mark.slow
def test_a_ctrl_c_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """Ctrl-C reaches the ranks at different moments (here only rank 0 gets it): they decide
    together, so none trains a step alone and waits for a peer that has stopped."""
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path, 120, "interrupt")
    results = [(tmp_path / f"result_rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert results[0][:2] == results[1][:2] == ["interrupted", "4"]
    rank0 = torch.load(tmp_path / "weights_rank0.pt")
    rank1 = torch.load(tmp_path / "weights_rank1.pt")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"replicas diverged at {key}"
    assert (tmp_path / "checkpoints" / "latest.pt").exists()


def test_sampler_shards_cover_each_global_batch_once():
    single = list(ResumableSampler(10, seed=3))
    shards = [list(ResumableSampler(10, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(single)
    # step t of rank r takes padded[(t*b + i)*world + r]: the same set as one process's batch t.
    assert sorted(shards[0][:2] + shards[1][:2]) == sorted(single[:4])


def test_sampler_resumes_mid_epoch():
    sampler = ResumableSampler(20, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, offset=7)
    assert list(sampler) == full[7:] and len(sampler) == 13
    sampler.set_epoch(3)
    assert list(sampler) != full
