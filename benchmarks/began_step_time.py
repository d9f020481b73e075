"""Seconds per BEGAN training step through the real Trainer, for one or more presets.

Each preset (a name such as began64-fast, or a YAML file, optionally with --set overrides) trains for
`--warmup + --steps` steps on random uint8 faces held in memory (so the data path costs nothing
and no aligner runs), through `engine.Trainer` exactly as `facegan gan train` does (EMA on,
grids and checkpoints off). The time of each step is the gap between consecutive calls of the
step's `train_step`, so it includes the Trainer's per-step work (batch, EMA, NaN check); the
median over the timed steps is printed, with the model's parameter count and the FLOPs of one
step (torch.utils.flop_counter). Presets alternate over `--rounds` rounds because this machine
is shared and noisy; the median of the round medians is reported. Beside the wall time, the
process CPU time of each step is reported: with one thread it is the compute the step needs,
and unlike the wall time it does not grow while other processes hold the cores.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/began_step_time.py \\
        began64-cpu began64-fast --steps 20 --threads 1
    .venv/bin/python benchmarks/began_step_time.py began64-fast dcgan64-cpu --compare-amp --rounds 3 --threads 2

The trainer settings are the preset's own (`trainer.amp` included; until 2026-11-25 this script
built its own and dropped the amp setting, so an AMP preset was timed in float32).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from data_prep.face_array import FaceTensor
from engine.config import load_config
from engine.presets import resolve_preset
from engine.trainer import Trainer
from gan.generators.config import GANRunConfig
from gan.generators.step import build_gan_step




def step_times(config: GANRunConfig, steps: int, warmup: int, threads: int) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) of each of `steps` GAN steps after `warmup` untimed ones."""
    size = config.gan.image_size
    images = torch.randint(0, 256, (max(256, 4 * config.trainer.batch_size), 3, size, size), dtype=torch.uint8)
    step = build_gan_step(config.gan)
    starts: list[tuple[float, float]] = []
    inner = step.train_step

    def timed(batch, index):
        starts.append((time.perf_counter(), time.process_time()))
        return inner(batch, index)

    step.train_step = timed
    with tempfile.TemporaryDirectory() as out:
        # The preset's own trainer settings (amp, EMA, batch...), with the outputs switched off.
        train = dataclasses.replace(config.trainer, out_dir=out, max_steps=warmup + steps + 1, ema_modules=("generator",),
                                    log_every=0, checkpoint_every=0, sample_every=0, eval_every=0, progress=False,
                                    tensorboard=False, threads=threads, resume=False, max_seconds=0.0)
        Trainer(step, FaceTensor(images), train, {}).fit()
    wall = [b[0] - a[0] for a, b in zip(starts[:-1], starts[1:])]
    cpu = [b[1] - a[1] for a, b in zip(starts[:-1], starts[1:])]
    return wall[warmup:], cpu[warmup:]


def step_gflops(config: GANRunConfig) -> tuple[float, float]:
    """(GFLOP of one BEGAN step: G forward, D on real and fake, both backwards, G through D;
    million parameters of G + D)."""
    step = build_gan_step(config.gan)
    g, d = step.generator, step.discriminator
    b, size = config.trainer.batch_size, config.gan.image_size
    real = torch.rand(b, 3, size, size) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        fake = g(torch.rand(b, config.gan.latent_dim) * 2 - 1)
        ((d(real) - real).abs().mean() - 0.1 * (d(fake.detach()) - fake.detach()).abs().mean()).backward()
        (d(fake) - fake).abs().mean().backward()
    params = sum(p.numel() for p in g.parameters()) + sum(p.numel() for p in d.parameters())
    return counter.get_total_flops() / 1e9, params / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="GAN presets: names (began64-fast) or YAML files")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to every preset (repeatable), e.g. trainer.batch_size=16")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--compare-amp", action="store_true",
                        help="time every preset twice, float32 and with trainer.amp (bfloat16 on a CPU that has it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = {str(path): load_config(GANRunConfig, resolve_preset(path, "gan.generators"), args.overrides)
               for path in args.configs}
    if args.compare_amp:
        configs = {f"{name} [{'amp' if amp else 'float32'}]": dataclasses.replace(c, trainer=dataclasses.replace(c.trainer, amp=amp))
                   for name, c in configs.items() for amp in (False, True)}
    walls: dict[str, list[float]] = {name: [] for name in configs}
    cpus: dict[str, list[float]] = {name: [] for name in configs}
    for round_index in range(args.rounds):
        for name, config in configs.items():
            wall, cpu = step_times(config, args.steps, args.warmup, args.threads)
            walls[name].append(statistics.median(wall))
            cpus[name].append(statistics.median(cpu))
            print(f"round {round_index + 1} {name}: median {walls[name][-1]:.3f} s/step wall (min {min(wall):.3f}, "
                  f"max {max(wall):.3f}), {cpus[name][-1]:.3f} s/step CPU", flush=True)
    print(f"{args.steps} steps x {args.rounds} round(s), {args.threads} thread(s), medians:")
    for name, config in configs.items():
        gflop, mparams = step_gflops(config)
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"  {name}: {wall:.3f} s/step wall, {cpu:.3f} s/step CPU, batch {config.trainer.batch_size}, "
              f"{gflop:.1f} GFLOP/step ({gflop / cpu:.1f} GFLOP per CPU-second), {mparams:.2f} M parameters")


if __name__ == "__main__":
    main()
