"""Launched by test_distributed.py under torchrun; trains a deterministic toy model and
writes each rank's final weights. With a second argument "timed" the run is bounded by time,
its rate follows the clock, and rank 1 is slower per step than rank 0; with "interrupt" rank 0
alone gets a Ctrl-C (SIGINT) during its fourth step."""
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from engine.trainer import Trainer, TrainerConfig


class LinearStep:
    def __init__(self, timed: bool = False, interrupt: bool = False):
        self.timed, self.interrupt = timed, interrupt
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"net": self.opt}

    def setup(self, ctx):
        self.ctx = ctx

    def train_step(self, batch, step):
        x, y = batch
        if self.interrupt and step == 3 and self.ctx.dist.rank == 0:
            os.kill(os.getpid(), signal.SIGINT)
        if self.timed:
            import time

            from engine.schedules import learning_rate

            time.sleep(0.01 if self.ctx.dist.rank == 0 else 0.04)
            for group in self.opt.param_groups:
                group["lr"] = learning_rate(step, 0.1, "cosine", total_steps=100000, budget_spent=self.ctx.budget_spent())
        loss = ((self.ctx.models["net"](x) - y) ** 2).mean()
        return {"loss": float(loss.detach()), "grad_norm": self.ctx.optimize("net", loss)}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def main(out: str, mode: str = "") -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    data = TensorDataset(x, torch.sin(x.sum(1, keepdim=True)))
    timed = mode == "timed"
    step = LinearStep(timed, interrupt=mode == "interrupt")
    config = TrainerConfig(out_dir=out, max_steps=100000 if timed else 20, max_seconds=1.5 if timed else 0.0,
                           batch_size=8, seed=5, progress=False, tensorboard=False, checkpoint_every=0, log_every=0,
                           threads=1)
    result = Trainer(step, data, config, {}).fit()
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save(step.net.state_dict(), Path(out) / f"weights_rank{rank}.pt")
    (Path(out) / f"result_rank{rank}.txt").write_text(f"{result['status']} {result['global_step']} "
                                                      f"{step.opt.param_groups[0]['lr']}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
