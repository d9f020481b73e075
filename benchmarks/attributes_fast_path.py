"""The attribute inference fast path against eager float32, in one run.

    python benchmarks/attributes_fast_path.py [--preset NAME] [--threads 2] [--batch 256] [--photos 256]

Model only: the preset's network (40 CelebA heads; its BatchNorms given non-trivial
statistics), one forward of `--batch` faces with flip test-time augmentation as `predict` runs
it: eager float32 on the whole batch (the reference), eager float32 in the fast path's
micro-batches (how much of the gain is cache blocking alone), the fast path (BatchNorms folded,
NHWC, micro-batches), then the fast path in bfloat16 where the CPU computes it natively; for one
network and for the preset's ensemble of 2. Best of 5 rounds, the variants taking turns; the largest output difference from
eager is printed. `--micro-batches 16,32,64` also times the fast path at each size.

On a CPU with AVX-512, `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2` in front of the
command makes oneDNN and PyTorch's own kernels use AVX2 only (and turns bfloat16 off), which is
how the AVX2-only figure can be measured here.

End to end: `attributes predict` on `--photos` raw CelebA photos of ../shared/data (decode +
MTCNN alignment + model), eager against fast, the same checkpoint (a preset network saved
untrained: speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attributes.config import AttributeRunConfig  # noqa: E402
from attributes.inference import CPU_MICRO_BATCH, FastAttributeModel, raw_outputs  # noqa: E402
from attributes.model import AttributeEnsemble, build_attribute_model  # noqa: E402
from data_prep.datasets.celeba import CELEBA_ATTRIBUTES  # noqa: E402
from data_prep.datasets.schema import LabelSchema  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.device import cpu_has_native_bfloat16, cpu_model_name  # noqa: E402
from engine.presets import resolve_preset  # noqa: E402


ROUNDS = 5


def network(config: AttributeRunConfig, seed: int):
    torch.manual_seed(seed)
    model = build_attribute_model(config.model, {"celeba": LabelSchema.binary(CELEBA_ATTRIBUTES)}).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def timed_runner(model, faces: torch.Tensor, micro_batch: int | None = None):
    """A function that runs `model` over `faces` with flip TTA, fed `micro_batch` faces at a
    time from outside (None: the whole batch), and returns the binary outputs."""
    size = micro_batch or len(faces)

    def run() -> torch.Tensor:
        return torch.cat([raw_outputs(model, faces[i:i + size], "celeba", flip_tta=True)["binary"]
                          for i in range(0, len(faces), size)])

    return run


def best_rates(runners: list, images: int, seconds: float, rounds: int = ROUNDS) -> list[float]:
    """Best images/s of each runner over `rounds` rounds of `seconds / rounds` each, the runners
    taking turns within every round, so that a slow spell of the machine hits all of them."""
    best = [0.0] * len(runners)
    for _ in range(rounds):
        for index, run in enumerate(runners):
            count, start = 0, time.perf_counter()
            while count == 0 or time.perf_counter() - start < seconds / rounds:
                run()
                count += 1
            best[index] = max(best[index], count * images / (time.perf_counter() - start))
    return best


class Eager(torch.nn.Module):
    """The trained model as it is, where `predict` asks for its fast path."""

    dtype = None

    def __init__(self, model):
        super().__init__()
        self.model, self.groups, self.schemas, self.input_size = model, model.groups, model.schemas, model.input_size

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def end_to_end(checkpoint: Path, photos: Path, fast: bool, threads: int) -> float:
    """Seconds of `predict_paths` in this process, eager (the fast path swapped out) or fast."""
    from attributes import inference
    from attributes.predict import predict_paths

    original = inference.LoadedModel.fast
    if not fast:
        inference.LoadedModel.fast = lambda self, bf16=False: Eager(self.model)
    try:
        start = time.perf_counter()
        result = predict_paths(checkpoint, [photos], batch_size=64)
        seconds = time.perf_counter() - start
    finally:
        inference.LoadedModel.fast = original
    assert result["counts"]["aligned"] > 0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="celeba80-vgg-closeup-all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=6.0, help=f"timing per variant (best of {ROUNDS} rounds)")
    parser.add_argument("--photos", type=int, default=256, help="raw CelebA photos for the end-to-end predict (0: skip it)")
    parser.add_argument("--micro-batches", default="", help="comma-separated sizes at which to also time the fast path "
                        "in float32, e.g. 16,32,64 (how attributes.inference.CPU_MICRO_BATCH was chosen)")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(AttributeRunConfig, resolve_preset(args.preset, "attributes"), [])
    faces = torch.randint(0, 256, (args.batch, 3, config.model.trunk.input_size, config.model.trunk.input_size),
                          dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bf16 = cpu_has_native_bfloat16()
    print(f"CPU: {cpu_model_name()}; ISA used: {torch.backends.cpu.get_cpu_capability()}; native bfloat16: "
          f"{'yes' if bf16 else 'no'}; {args.threads} thread(s); preset {args.preset} ({config.model.trunk.name} x"
          f"{config.model.trunk.width} at {config.model.trunk.input_size} px); batch {args.batch}; flip test-time "
          f"augmentation; best of {ROUNDS} rounds, the variants taking turns")
    print()
    print("| model | variant | images/s | x eager float32 | largest |difference| from eager |")
    print("|---|---|---|---|---|")
    for label, model in (("1 network", network(config, 0)),
                         ("ensemble of 2", AttributeEnsemble([network(config, 0), network(config, 1)]).eval())):
        variants = [("eager float32", model, None),
                    (f"eager float32 in micro-batches of {CPU_MICRO_BATCH}", model, CPU_MICRO_BATCH),
                    (f"fast path float32 (BN folded, NHWC, micro-batches of {CPU_MICRO_BATCH})", FastAttributeModel(model), None)]
        if bf16:
            variants.append(("fast path bfloat16", FastAttributeModel(model, torch.bfloat16), None))
        for size in (int(s) for s in args.micro_batches.split(",") if s.strip()):
            variants.append((f"fast path float32, micro-batches of {size}", FastAttributeModel(model, micro_batch=size), None))
        runners = [timed_runner(variant, faces, outside) for _, variant, outside in variants]
        outputs = [run() for run in runners]  # also the warm-up: oneDNN primitives, folded weights
        rates = best_rates(runners, len(faces), args.seconds)
        for (name, _, _), rate, out in zip(variants, rates, outputs):
            print(f"| {label} | {name} | {rate:.0f} | {rate / rates[0]:.2f}x | {(out - outputs[0]).abs().max().item():.2g} |",
                  flush=True)
    folder = args.data_root / "celeba" / "img_align_celeba"
    if args.photos <= 0 or not folder.is_dir():
        print(f"\nend to end skipped: {'--photos 0' if args.photos <= 0 else f'no {folder}'}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for source in sorted(folder.iterdir())[:args.photos]:
            (photos / source.name).symlink_to(source)
        from engine.checkpoint import atomic_save
        from engine.config import plain_data

        model = network(config, 0)
        run = plain_data(config)
        run["schemas"] = {"celeba": LabelSchema.binary(CELEBA_ATTRIBUTES).to_dict()}
        checkpoint = Path(tmp) / "model.pt"
        atomic_save({"modules": {"model": model.state_dict()}, "run_config": run, "global_step": 0}, checkpoint)
        end_to_end(checkpoint, photos, True, args.threads)  # warm-up: MTCNN weights, oneDNN primitives
        times = {fast: min(end_to_end(checkpoint, photos, fast, args.threads) for _ in range(2)) for fast in (False, True)}
        print()
        print(f"attributes predict on {args.photos} raw CelebA photos (decode + MTCNN + model, flip TTA), best of 2: "
              f"eager {args.photos / times[False]:.1f} images/s, fast path {args.photos / times[True]:.1f} images/s "
              f"({times[False] / times[True]:.2f}x)")


if __name__ == "__main__":
    main()
