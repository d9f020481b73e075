"""torchrun / DistributedDataParallel set-up, and the sharded, resumable sampler.

Under `torchrun --nproc_per_node N`, every process reads RANK / WORLD_SIZE / LOCAL_RANK from
the environment; `init_distributed` joins the process group (gloo on the CPU, nccl on CUDA).
Without those variables everything runs as a single process and the helpers are no-ops.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["DistributedInfo", "init_distributed", "shutdown_distributed", "ResumableSampler", "all_reduce_mean"]


@dataclass(frozen=True)
class DistributedInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str = "cpu") -> DistributedInfo:
    """Join the torchrun process group if launched by torchrun; otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistributedInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, info: DistributedInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffling, sharded across ranks, that can start mid-epoch.

    The permutation of epoch e depends only on (seed, e), so a resumed run, told how many
    samples of the current epoch this rank already consumed, yields exactly the rest.
    Each rank takes every world_size-th index of the (padded) permutation, as
    DistributedSampler does, so the ranks together cover one global batch per step.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if num_samples <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.offset = 0

    def set_epoch(self, epoch: int, offset: int = 0) -> None:
        self.epoch = epoch
        self.offset = offset

    def per_rank(self) -> int:
        return -(-self.num_samples // self.world_size)

    def __len__(self) -> int:
        return self.per_rank() - self.offset

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        padded = order + order[: self.per_rank() * self.world_size - len(order)]
        mine = padded[self.rank :: self.world_size]
        return iter(mine[self.offset :])
