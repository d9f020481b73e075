"""Does the Trainer cost anything? DCGAN-64 through `engine.Trainer` vs a bare loop, same run.

Both paths train the same DCGAN networks (same widths, Adam, non-saturating loss) on the same
in-memory uint8 faces with the same batch size. The bare loop is what one would write by hand:
slice a shuffled tensor, two optimiser steps. The Trainer path adds its DataLoader, EMA, NaN
guard, logging and the step object. Paths alternate over several rounds (this machine is
noisy) and the median images/s of each is compared: the ratio Trainer / bare should be >= 0.95.
The Trainer's rate is its steady state (two run lengths differenced); its fixed cost per run is
printed beside it.

It also reports the achieved GFLOP/s of the step (FLOPs counted by torch.utils.flop_counter)
against the machine's peak matmul GFLOP/s measured in the same run.

`--device cuda` runs both paths on the GPU (with synchronised timing) and `--amp` trains both in
mixed precision as `trainer.amp` does: float16 with loss scaling on CUDA, bfloat16 on a CPU with
native bfloat16. With `--amp` a float32 bare loop is timed in every round as well, so the AMP
speed-up is measured in the same run; the peak matmul is then measured in the AMP dtype.

    .venv/bin/python benchmarks/gan_trainer_overhead.py --steps 20 --rounds 3 --threads 2
    .venv/bin/python benchmarks/gan_trainer_overhead.py --device cuda --amp --batch 128 --width 1024 --steps 50
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from data_prep.face_array import FaceTensor
from engine.device import autocast_dtype, choose_device
from engine.trainer import Trainer, TrainerConfig
from gan.generators.config import DCGANConfig, GANConfig
from gan.generators.step import build_gan_step




def gan_config(width: int) -> GANConfig:
    return GANConfig(model="dcgan", image_size=64, dcgan=DCGANConfig(g_channels=width, d_channels=width))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(images: torch.Tensor, width: int, steps: int, batch: int, device: torch.device,
              amp_dtype: torch.dtype | None = None) -> float:
    """Images/s of a hand-written loop; `amp_dtype` trains under autocast, with a GradScaler for
    float16 (what `trainer.amp` does, written out)."""
    step_obj = build_gan_step(gan_config(width))  # only for identical initial networks
    g, d = step_obj.generator.to(device), step_obj.discriminator.to(device)
    cfg = step_obj.config.dcgan
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    scaled = amp_dtype == torch.float16
    scaler_g, scaler_d = (torch.amp.GradScaler(device.type, enabled=scaled) for _ in range(2))

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    images = images.to(device)
    order = torch.randperm(len(images), device=device)
    _synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        idx = order[(i * batch) % (len(images) - batch):][:batch]
        real = images[idx].float().div(127.5).sub(1.0)
        z = torch.rand(batch, cfg.latent_dim, device=device) * 2 - 1
        with autocast():
            fake = g(z)
            loss_d = F.softplus(-d(real)).float().mean() + F.softplus(d(fake.detach())).float().mean()
        opt_d.zero_grad(set_to_none=True)
        scaler_d.scale(loss_d).backward()
        scaler_d.step(opt_d)
        scaler_d.update()
        with autocast():
            loss_g = F.softplus(-d(fake)).float().mean()
        opt_g.zero_grad(set_to_none=True)
        scaler_g.scale(loss_g).backward()
        scaler_g.step(opt_g)
        scaler_g.update()
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def trainer_seconds(images: torch.Tensor, width: int, steps: int, batch: int, device: torch.device, amp: bool) -> float:
    """Wall time of a whole fresh `Trainer.fit()` of `steps` steps (set-up and teardown included)."""
    step_obj = build_gan_step(gan_config(width))
    with tempfile.TemporaryDirectory() as out:
        config = TrainerConfig(out_dir=out, max_steps=steps, batch_size=batch, ema_decay=0.999,
                               ema_modules=("generator",), log_every=10, checkpoint_every=0, sample_every=0,
                               progress=False, tensorboard=False, threads=torch.get_num_threads(),
                               device=str(device), amp=amp)
        start = time.perf_counter()
        Trainer(step_obj, FaceTensor(images), config, {}).fit()
        _synchronize(device)
        return time.perf_counter() - start


def trainer_loop(images: torch.Tensor, width: int, steps: int, batch: int, device: torch.device,
                 amp: bool) -> tuple[float, float]:
    """(steady-state images/s, fixed seconds): two run lengths, so fixed costs (set-up, the final
    checkpoint and curves.png) cancel in the difference and are reported on their own."""
    short = trainer_seconds(images, width, steps, batch, device, amp)
    long = trainer_seconds(images, width, 2 * steps, batch, device, amp)
    per_step = (long - short) / steps
    return batch / per_step, short - steps * per_step


def step_flops(width: int, batch: int) -> float:
    step_obj = build_gan_step(gan_config(width))
    g, d = step_obj.generator, step_obj.discriminator
    real = torch.rand(batch, 3, 64, 64) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        z = torch.rand(batch, step_obj.config.dcgan.latent_dim) * 2 - 1
        fake = g(z)
        (F.softplus(-d(real)).mean() + F.softplus(d(fake.detach())).mean()).backward()
        F.softplus(-d(fake)).mean().backward()
    return float(counter.get_total_flops())


def peak_matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 10) -> float:
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        a @ b
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round and path")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are compared")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--width", type=int, default=256, help="DCGAN channels at 4x4 (paper: 1024)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision in both paths (float16 + loss scaling on CUDA, bfloat16 on CPU); "
                             "a float32 bare loop is timed beside them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = choose_device(args.device)
    amp_dtype = autocast_dtype(device) if args.amp else None
    if args.amp and amp_dtype is None:
        parser.error(f"--amp: {device} has no fast mixed precision (no native bfloat16 on this CPU); drop --amp")
    images = torch.randint(0, 256, (2048, 3, 64, 64), dtype=torch.uint8)
    bare_loop(images, args.width, 3, args.batch, device, amp_dtype)  # warm-up of the allocator and kernels
    bare, bare_fp32, trainer, fixed = [], [], [], []
    for round_index in range(args.rounds):
        bare.append(bare_loop(images, args.width, args.steps, args.batch, device, amp_dtype))
        if amp_dtype is not None:
            bare_fp32.append(bare_loop(images, args.width, args.steps, args.batch, device))
        rate, seconds = trainer_loop(images, args.width, args.steps, args.batch, device, args.amp)
        trainer.append(rate)
        fixed.append(seconds)
        fp32 = f", bare float32 {bare_fp32[-1]:.1f} img/s" if bare_fp32 else ""
        print(f"round {round_index + 1}: bare {bare[-1]:.1f} img/s{fp32}, trainer {trainer[-1]:.1f} img/s steady, "
              f"{seconds:.2f} s fixed per run")
    bare_median, trainer_median = statistics.median(bare), statistics.median(trainer)
    flops = step_flops(args.width, args.batch)
    peak = peak_matmul_gflops(device, amp_dtype or torch.float32)
    achieved = flops / (args.batch / bare_median) / 1e9
    precision = f"AMP {str(amp_dtype).removeprefix('torch.')}" if amp_dtype else "float32"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"DCGAN-64 (width {args.width}), batch {args.batch}, {name}, {precision}, {args.steps} steps x {args.rounds} rounds")
    print(f"  bare loop:  {bare_median:8.1f} img/s (median)")
    if bare_fp32:
        fp32_median = statistics.median(bare_fp32)
        print(f"  bare loop in float32: {fp32_median:8.1f} img/s (median); AMP speed-up {bare_median / fp32_median:.2f}x")
    print(f"  Trainer:    {trainer_median:8.1f} img/s (median, steady state: runs of {args.steps} and {2 * args.steps} steps differenced)")
    print(f"  Trainer fixed cost per run (set-up, final checkpoint, curves.png): {statistics.median(fixed):.2f} s")
    print(f"  ratio Trainer / bare: {trainer_median / bare_median:.3f}  (target >= 0.95)")
    print(f"  step FLOPs: {flops / 1e9:.1f} GFLOP per step; achieved {achieved:.1f} GFLOP/s "
          f"vs peak {str(amp_dtype or torch.float32).removeprefix('torch.')} matmul {peak:.1f} GFLOP/s = {achieved / peak:.2f} of peak")


if __name__ == "__main__":
    main()
