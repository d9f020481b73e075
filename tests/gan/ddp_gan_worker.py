"""Launched by test_gan_distributed.py under torchrun: trains each GAN step for a few steps on
two CPU processes (gloo) and writes each rank's final weights, k_t and first-step noise."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from engine.trainer import Trainer, TrainerConfig
from gan.generators.config import BEGANConfig, DCGANConfig, GANConfig
from gan.generators.step import BEGANStep, DCGANStep


def _configs():
    small = dict(image_size=32, num_samples=4, interpolation_rows=0)
    wgan = DCGANConfig(g_channels=16, d_channels=16, loss="wgan-gp", n_critic=2)
    yield "wgan-gp", DCGANStep(GANConfig(model="dcgan", **small, dcgan=wgan))
    yield "nonsaturating", DCGANStep(GANConfig(model="dcgan", **small, dcgan=DCGANConfig(g_channels=16, d_channels=16)))
    began = BEGANConfig(latent_dim=8, hidden_channels=4, bottleneck_dim=8, k_init=0.2, lambda_k=0.05)
    yield "began", BEGANStep(GANConfig(model="began", **small, began=began))


def main(out: str) -> None:
    images = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for name, step in _configs():
        config = TrainerConfig(out_dir=str(Path(out) / name), max_steps=4, batch_size=8, seed=5, progress=False,
                               tensorboard=False, checkpoint_every=0, log_every=0, threads=1)
        Trainer(step, TensorDataset(images), config, {}).fit()
        rank = dist.get_rank() if dist.is_initialized() else 0
        state = {f"{part}.{k}": v for part, m in step.modules().items() for k, v in m.state_dict().items()}
        state["k"] = torch.tensor(getattr(step, "k", 0.0), dtype=torch.float64)
        state["noise"] = step._noise(4, step._step_rng(0))
        torch.save(state, Path(out) / f"{name}_rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
