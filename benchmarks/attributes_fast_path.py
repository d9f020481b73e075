"""The attribute inference fast path against eager float32, in one run.

    python benchmarks/attributes_fast_path.py [--threads 2] [--batch 256] [--photos 256]

Model only: the shipped preset's network (AlexNet-BN x0.25 at 64 px, 40 CelebA heads; its
BatchNorms given non-trivial statistics), one forward of `--batch` faces with flip test-time
augmentation as `predict` runs it: eager float32, then the fast path (BatchNorms folded, NHWC),
then the fast path in bfloat16 where the CPU computes it natively; for one network and for the
preset's ensemble of 2. Best of 3 rounds; the largest output difference from eager is printed.

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
from attributes.inference import FastAttributeModel, raw_outputs  # noqa: E402
from attributes.model import AttributeEnsemble, build_attribute_model  # noqa: E402
from data_prep.datasets.celeba import CELEBA_ATTRIBUTES  # noqa: E402
from data_prep.datasets.schema import LabelSchema  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.device import cpu_has_native_bfloat16, cpu_model_name  # noqa: E402
from engine.presets import resolve_preset  # noqa: E402




def network(config: AttributeRunConfig, seed: int):
    torch.manual_seed(seed)
    model = build_attribute_model(config.model, {"celeba": LabelSchema.binary(CELEBA_ATTRIBUTES)}).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def images_per_second(model, faces: torch.Tensor, seconds: float) -> tuple[float, torch.Tensor]:
    out = raw_outputs(model, faces, "celeba", flip_tta=True)["binary"]
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            raw_outputs(model, faces, "celeba", flip_tta=True)
            count += 1
        best = max(best, count * len(faces) / (time.perf_counter() - start))
    return best, out


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
    parser.add_argument("--preset", default="celeba64-closeup-all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per variant (best of 3 rounds)")
    parser.add_argument("--photos", type=int, default=256, help="raw CelebA photos for the end-to-end predict")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(AttributeRunConfig, resolve_preset(args.preset, "attributes"), [])
    faces = torch.randint(0, 256, (args.batch, 3, config.model.trunk.input_size, config.model.trunk.input_size),
                          dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bf16 = cpu_has_native_bfloat16()
    print(f"CPU: {cpu_model_name()}; native bfloat16: {'yes' if bf16 else 'no'}; {args.threads} thread(s); batch {args.batch}; "
          f"flip test-time augmentation; best of 3 rounds")
    print()
    print("| model | variant | images/s | x eager float32 | largest |difference| from eager |")
    print("|---|---|---|---|---|")
    for label, model in (("1 network", network(config, 0)),
                         ("ensemble of 2", AttributeEnsemble([network(config, 0), network(config, 1)]).eval())):
        eager, reference = images_per_second(model, faces, args.seconds)
        print(f"| {label} | eager float32 | {eager:.0f} | 1.00x | 0 |", flush=True)
        variants = [("fast path float32", FastAttributeModel(model))]
        if bf16:
            variants.append(("fast path bfloat16", FastAttributeModel(model, torch.bfloat16)))
        for name, fast in variants:
            rate, out = images_per_second(fast, faces, args.seconds)
            print(f"| {label} | {name} | {rate:.0f} | {rate / eager:.2f}x | {(out - reference).abs().max().item():.2g} |",
                  flush=True)
    folder = args.data_root / "celeba" / "img_align_celeba"
    if not folder.is_dir():
        print(f"\nend to end skipped: no {folder}")
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
