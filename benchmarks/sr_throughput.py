"""Super-resolution speed, as ratios measured in the same run.

1. Inference images/s of the SR generator: the eager eval-mode model against the fast path of
   `engine.fold.optimize_for_inference` (BatchNorm folded into the convolutions, channels_last),
   and optionally torch.compile on top (`--compile`). The largest output difference is printed
   as a check that the fast path computes the same function. Variants alternate over `--rounds`
   rounds (this machine is shared and noisy); the median of each variant is reported.
2. `facegan sr apply` end to end on a folder of PNG faces (`--apply`): images/s including
   reading, resizing to the model's input, SR, PNG encoding and the manifest, against the bare
   generator forward pass over the same number of images in the same run.

The generators are the ones the presets build (gan/sr/presets/*.yaml); weights are random unless
`--checkpoint` is given, since speed does not depend on the weights. Run on an idle machine:

    .venv/bin/python benchmarks/sr_throughput.py --threads 2 --apply
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.config import load_config
from engine.presets import resolve_preset
from engine.fold import count_batchnorms, optimize_for_inference
from gan.sr.models import build_sr_generator
from gan.sr.config import SRRunConfig



def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation, compile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _generator(preset: Path, checkpoint: str | None) -> torch.nn.Module:
    if checkpoint:
        from gan.sr.inference import load_sr_checkpoint

        return load_sr_checkpoint(checkpoint).generator.eval()
    run = load_config(SRRunConfig, preset)
    generator = build_sr_generator(run.sr.model)
    # Non-trivial BatchNorm statistics, so that folding has real work to do and to get right.
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return generator.eval()


def bench_inference(preset: Path, args: argparse.Namespace) -> None:
    generator = _generator(preset, args.checkpoint)
    size = generator.input_size
    x = torch.rand(args.batch_size, 3, size, size) * 2 - 1
    variants = {"eager": generator, "folded+channels_last": optimize_for_inference(generator)}
    if args.compile:
        variants["folded+channels_last+compile"] = optimize_for_inference(generator, compile=True)
    with torch.inference_mode():
        reference = generator(x)
        diffs = {name: float((model(x) - reference).abs().max()) for name, model in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, model in variants.items():
                times[name].append(_median_time(lambda: model(x), args.repeats))
    eager = statistics.median(times["eager"])
    print(f"\n{preset.name}: x{generator.scale}, {size} -> {generator.output_size} px, batch {args.batch_size}, "
          f"{count_batchnorms(generator)} BatchNorms in the eager model, "
          f"{count_batchnorms(variants['folded+channels_last'])} left after folding")
    print(f"{'variant':32s} {'images/s':>10s} {'ratio':>7s} {'max |diff|':>11s}")
    for name in variants:
        t = statistics.median(times[name])
        print(f"{name:32s} {args.batch_size / t:10.1f} {eager / t:7.2f} {diffs[name]:11.2e}")


def bench_apply(preset: Path, args: argparse.Namespace) -> None:
    from gan.sr.apply import apply_sr

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint
        generator = _generator(preset, checkpoint)
        if checkpoint is None:
            # A real SR checkpoint from a 1-step training run, so that `sr apply` loads what it always loads.
            from engine.trainer import TrainerConfig
            from gan.sr.train import train

            run = load_config(SRRunConfig, preset)
            run.data = type(run.data)(source="synthetic", root=str(tmp / "synthetic"), synthetic_identities=8,
                                      synthetic_images_per_identity=2, eval_images=4)
            run.trainer = TrainerConfig(out_dir=str(tmp / "run"), max_steps=1, batch_size=4, progress=False,
                                      ema_modules=("generator",), ema_decay=0.9, checkpoint_every=0, eval_every=0)
            train(run)
            checkpoint = str(tmp / "run" / "checkpoints" / "latest.pt")
        src = tmp / "faces"
        src.mkdir()
        rng = np.random.default_rng(0)
        size = generator.input_size
        for i in range(args.apply_images):
            # Inputs at 2x the LR size, so that apply's resize to the model input is part of the cost.
            Image.fromarray(rng.integers(0, 256, (2 * size, 2 * size, 3), dtype=np.uint8)).save(src / f"{i:05d}.png")
        start = time.perf_counter()
        apply_sr(checkpoint, tmp / "out", src=src, batch_size=args.batch_size, progress=False)
        apply_seconds = time.perf_counter() - start
        x = torch.rand(args.apply_images, 3, size, size) * 2 - 1
        fast = optimize_for_inference(generator)
        with torch.inference_mode():
            forward_seconds = _median_time(lambda: [fast(c) for c in x.split(args.batch_size)], 1)
    print(f"\n`sr apply` on a folder of {args.apply_images} PNGs ({2 * size} px in, {generator.output_size} px out): "
          f"{args.apply_images / apply_seconds:.1f} images/s end to end; the bare fast-path forward pass alone "
          f"{args.apply_images / forward_seconds:.1f} images/s (end-to-end / forward = {forward_seconds / apply_seconds:.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("presets", nargs="*", default=["x4-16to64-cpu", "x8-8to64-cpu"],
                   help="SR presets (names or YAML files) whose generators to time (default: the two CPU presets)")
    p.add_argument("--checkpoint", help="time this SR checkpoint's generator instead of random weights")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per variant per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds alternating the variants")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time torch.compile on top of the fast path")
    p.add_argument("--apply", action="store_true", help="also time `facegan sr apply` end to end")
    p.add_argument("--apply-images", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    args.presets = [resolve_preset(preset, "gan.sr") for preset in args.presets]
    for preset in args.presets:
        bench_inference(preset, args)
    if args.apply:
        bench_apply(args.presets[0], args)


if __name__ == "__main__":
    main()
