"""One command that measures facegan on a GPU (or, with --device cpu --quick, checks it still runs).

    PYTHONPATH=. python benchmarks/gpu_check.py --device cuda --data benchmarks/data/gpu_check.npz
    python benchmarks/gpu_check.py --device cpu --quick          # what the test suite runs

A 30-second smoke stage runs first (every network built and stepped once on the device, MTCNN
on one photo), then, each as long as its share of `--budget` allows:

- DCGAN-64 and BEGAN-64 training images/s through the Trainer with `--amp`, against a bare loop
  of the same step's maths (the Trainer's overhead ratio);
- SR x4 (16 -> 64 px) training steps/s, through the Trainer;
- attribute training steps/s (`attributes train` on the built-in synthetic faces: two run
  lengths on one cache, so the set-up cancels);
- MTCNN alignment images/s (`FaceAligner`, on the device) against bare facenet-pytorch MTCNN on
  the same device and images;
- `sr apply` and `attributes predict` images/s, end to end on folders, with the checkpoints the
  stages above trained;
- and the peak memory of each (CUDA: the allocator's peak; CPU: the process's peak RSS so far).

It runs from source (`PYTHONPATH=.`) on whatever torch the machine has; the faces and photos
come from `--data` (made here by `benchmarks/make_gpu_check_data.py` from ../shared/data), else
the built-in synthetic faces and the bundled astronaut. See benchmarks/gpu_check.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass
class Sizes:
    """How big each stage is: the full check, or the suite's quick one."""

    gan_width: int
    gan_batch: int
    gan_steps: int
    sr_batch: int
    sr_steps: int
    attribute_batch: int
    attribute_steps: int
    faces: int
    photos: int


FULL = Sizes(gan_width=512, gan_batch=128, gan_steps=60, sr_batch=32, sr_steps=40, attribute_batch=128,
             attribute_steps=60, faces=3000, photos=256)
QUICK = Sizes(gan_width=32, gan_batch=8, gan_steps=2, sr_batch=4, sr_steps=2, attribute_batch=8, attribute_steps=2,
              faces=64, photos=4)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# ------------------------------------------------------------------------------------- data
def load_data(path: Path | None, sizes: Sizes) -> tuple[torch.Tensor, list[bytes]]:
    """(uint8 faces (N, 3, 64, 64), raw photos as encoded bytes)."""
    if path is not None:
        data = np.load(path)
        faces = torch.from_numpy(data["faces"][:sizes.faces]).permute(0, 3, 1, 2).contiguous()
        blob, offsets = data["photos"].tobytes(), data["photo_offsets"]
        photos = [blob[offsets[k]:offsets[k + 1]] for k in range(min(sizes.photos, len(offsets) - 1))]
        return faces, photos
    from data_prep.assets import ASTRONAUT_JPG
    from data_prep.synthetic import render_faces

    faces = render_faces(sizes.faces, seed=0, size=64).image_tensor()
    return faces, [ASTRONAUT_JPG.read_bytes()] * sizes.photos




# ------------------------------------------------------------------------------------- training
from data_prep.face_array import FaceTensor  # noqa: E402


def bare_images_per_second(step, faces: torch.Tensor, device: torch.device, amp: bool, steps: int, batch: int) -> float:
    """The step's maths alone: its modules and optimisers on the device, batches sliced from a
    device tensor, no DataLoader, EMA, logging or guards."""
    from engine.distributed import DistributedInfo
    from engine.trainer import StepContext

    ctx = StepContext(device, DistributedInfo(), amp, 0.0)
    for name, module in step.modules().items():
        ctx.models[name] = module.to(device)
    ctx.optimizers = step.optimizers()
    ctx.scalers = {name: torch.amp.GradScaler(device.type, enabled=ctx.amp_dtype is torch.float16)
                   for name in ctx.optimizers}
    step.setup(ctx)
    images = faces.to(device)
    step.train_step({"image": images[:batch]}, 0)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        first = (i * batch) % (len(images) - batch + 1)
        step.train_step({"image": images[first:first + batch]}, i + 1)
    synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def trainer_seconds(step, faces: torch.Tensor, device: torch.device, amp: bool, steps: int, batch: int,
                    out: Path, ema: tuple[str, ...] = ()) -> float:
    from engine.trainer import Trainer, TrainerConfig

    config = TrainerConfig(out_dir=str(out), max_steps=steps, batch_size=batch, ema_decay=0.999 if ema else 0.0,
                           ema_modules=ema, log_every=10, checkpoint_every=0, sample_every=0, progress=False,
                           tensorboard=False, threads=torch.get_num_threads(), device=str(device), amp=amp)
    start = time.perf_counter()
    Trainer(step, FaceTensor(faces), config, {}).fit()
    synchronize(device)
    return time.perf_counter() - start


def steady(steps: int, short: float, long: float) -> tuple[float, str]:
    """Steps/s of a steady state from runs of `steps` and `2 * steps` steps (set-up cancels in
    the difference); when the difference drowns in noise (the quick sizes), the long run's own
    rate with its set-up, and a note saying so."""
    if long - short > 0.1 * long:
        return steps / (long - short), ""
    return 2 * steps / long, " (set-up included: runs too short to difference)"


def steady_rate(make_step, faces, device, amp, steps, batch, folder: Path, ema=()) -> tuple[float, str]:
    """Images/s of the Trainer's steady state, and a note."""
    short = trainer_seconds(make_step(), faces, device, amp, steps, batch, folder / "short", ema)
    long = trainer_seconds(make_step(), faces, device, amp, 2 * steps, batch, folder / "long", ema)
    rate, note = steady(steps, short, long)
    return rate * batch, note


def gan_stage(model: str, faces, device, sizes: Sizes, folder: Path) -> dict:
    from gan.generators.config import BEGANConfig, DCGANConfig, GANConfig
    from gan.generators.step import build_gan_step

    def make():
        if model == "dcgan":
            config = GANConfig(model="dcgan", image_size=64, dcgan=DCGANConfig(g_channels=sizes.gan_width,
                                                                              d_channels=sizes.gan_width))
        else:
            config = GANConfig(model="began", image_size=64, began=BEGANConfig(hidden_channels=sizes.gan_width // 4))
        return build_gan_step(config)

    bare = bare_images_per_second(make(), faces, device, True, sizes.gan_steps, sizes.gan_batch)
    trainer, note = steady_rate(make, faces, device, True, sizes.gan_steps, sizes.gan_batch, folder / model,
                                ("generator",))
    return {"what": f"{model.upper()}-64 training, --amp, batch {sizes.gan_batch}",
            "rate": f"{trainer:.0f} images/s (bare loop {bare:.0f}; Trainer/bare {trainer / bare:.2f}){note}"}


def sr_stage(faces, device, sizes: Sizes, folder: Path) -> tuple[dict, Path]:
    from engine.config import load_config
    from engine.presets import resolve_preset
    from gan.sr.config import SRRunConfig
    from gan.sr.step import SRStep

    # The preset's networks and losses, adversarial from the second step: both phases are timed.
    preset = load_config(SRRunConfig, resolve_preset("x4-16to64-cpu", "gan.sr"), ["sr.pretrain_steps=1"])
    config = preset.sr.resolved(4 * sizes.sr_steps)

    def make():
        return SRStep(config)

    rate, note = steady_rate(make, faces, device, True, sizes.sr_steps, sizes.sr_batch, folder)
    # A checkpoint of the trained generator for the sr apply stage, with the run config `sr train` writes.
    checkpoint = _sr_checkpoint(make, faces, device, sizes, folder / "checkpoint", preset)
    return {"what": f"SR x4 16->64 training (pixel + WGAN-GP), --amp, batch {sizes.sr_batch}",
            "rate": f"{rate / sizes.sr_batch:.2f} steps/s ({rate:.0f} images/s){note}"}, checkpoint


def _sr_checkpoint(make, faces, device, sizes: Sizes, out: Path, preset) -> Path:
    from engine.config import to_dict
    from engine.trainer import Trainer, TrainerConfig

    step = make()
    config = TrainerConfig(out_dir=str(out), max_steps=2, batch_size=sizes.sr_batch, checkpoint_every=0, progress=False,
                           tensorboard=False, device=str(device), threads=torch.get_num_threads())
    Trainer(step, FaceTensor(faces), config, {"sr": to_dict(step.config), "data": to_dict(preset.data)}).fit()
    return out / "checkpoints" / "latest.pt"


def attribute_stage(device, sizes: Sizes, folder: Path) -> tuple[dict, Path]:
    from attributes.config import AttributeRunConfig, DatasetEntry
    from attributes.train import train
    from engine.config import load_config
    from engine.presets import resolve_preset

    def run(steps: int, name: str) -> float:
        config = load_config(AttributeRunConfig, resolve_preset("celeba64", "attributes"), [])
        config.datasets = {"synthetic": DatasetEntry(source="synthetic", synthetic_identities=max(40, sizes.faces // 4),
                                                     cache_dir=str(folder / "cache"), root=str(folder / "synthetic"))}
        config.trainer.out_dir, config.trainer.max_steps = str(folder / name), steps
        config.trainer.batch_size, config.trainer.device = sizes.attribute_batch, str(device)
        config.trainer.eval_every = config.trainer.checkpoint_every = 0
        config.trainer.progress = config.trainer.tensorboard = False
        config.trainer.amp, config.trainer.threads = True, torch.get_num_threads()
        start = time.perf_counter()
        train(config, progress=False)
        synchronize(device)
        return time.perf_counter() - start

    run(sizes.attribute_steps, "warm")  # generates and caches the faces once
    short, long = run(sizes.attribute_steps, "short"), run(2 * sizes.attribute_steps, "long")
    rate, note = steady(sizes.attribute_steps, short, long)
    return ({"what": f"attribute training (celeba64 network, synthetic faces), --amp, batch {sizes.attribute_batch}",
             "rate": f"{rate:.2f} steps/s ({rate * sizes.attribute_batch:.0f} images/s){note}"},
            folder / "long" / "checkpoints" / "latest.pt")


# ------------------------------------------------------------------------------------- inference
def align_stage(photos: list[bytes], device, folder: Path) -> dict:
    from facenet_pytorch import MTCNN

    from data_prep.align.aligner import AlignConfig, FaceAligner
    from data_prep.images import load_rgb

    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for k, data in enumerate(photos):
        path = folder / f"photo{k:05d}.jpg"
        path.write_bytes(data)
        images.append(load_rgb(path))
    ours = FaceAligner(AlignConfig(device=str(device), output_size=128))
    bare = MTCNN(device=device)
    ours.align_batch(images[:2]), bare.detect(images[:2])
    synchronize(device)
    start = time.perf_counter()
    found = sum(r.status == "aligned" for k in range(0, len(images), 32) for r in ours.align_batch(images[k:k + 32]))
    synchronize(device)
    our_rate = len(images) / (time.perf_counter() - start)
    start = time.perf_counter()
    for k in range(0, len(images), 32):
        bare.detect(images[k:k + 32])
    synchronize(device)
    bare_rate = len(images) / (time.perf_counter() - start)
    return {"what": f"MTCNN alignment of {len(images)} decoded photos (batches of 32)",
            "rate": f"{our_rate:.0f} images/s (bare facenet-pytorch detection {bare_rate:.0f}; "
                    f"ratio {our_rate / bare_rate:.2f}; {found} aligned)"}


def sr_apply_stage(checkpoint: Path, faces: torch.Tensor, device, folder: Path) -> dict:
    from PIL import Image

    from gan.sr.apply import apply_sr

    src = folder / "faces"
    src.mkdir(parents=True, exist_ok=True)
    small = torch.nn.functional.interpolate(faces.float(), size=16, mode="area").round().to(torch.uint8)
    for k, face in enumerate(small.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(face).save(src / f"{k:05d}.png")
    summary = apply_sr(checkpoint, folder / "sr", src=src, device=device, batch_size=64, progress=False)
    return {"what": f"sr apply on a folder of {len(faces)} 16 px faces (read, SR, write PNGs)",
            "rate": f"{summary['images_per_second']:.0f} images/s"}


def predict_stage(checkpoint: Path, photos_folder: Path, count: int, device) -> dict:
    from attributes.predict import predict_paths

    start = time.perf_counter()
    result = predict_paths(checkpoint, [photos_folder], device=str(device), batch_size=32)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"what": f"attributes predict on {count} photos (decode, align, predict)",
            "rate": f"{count / seconds:.1f} images/s ({result['counts']['aligned']} aligned)"}


# ------------------------------------------------------------------------------------- the check
def smoke(device: torch.device, faces: torch.Tensor, photos: list[bytes]) -> None:
    """Every network once on the device: a broken environment fails here, in seconds."""
    from attributes.config import AttributeRunConfig
    from attributes.model import build_attribute_model
    from data_prep.synthetic import SYNTHETIC_SCHEMA
    from gan.generators.config import GANConfig
    from gan.generators.step import build_gan_step
    from gan.sr.config import SRModelConfig
    from gan.sr.models import build_sr_generator

    x = faces[:2].to(device).float() / 127.5 - 1
    step = build_gan_step(GANConfig(model="dcgan", image_size=64))
    step.generator.to(device)(torch.rand(2, step.config.latent_dim, device=device)).sum().backward()
    build_sr_generator(SRModelConfig()).to(device)(torch.nn.functional.interpolate(x, size=16)).sum().backward()
    model = build_attribute_model(AttributeRunConfig().model, {"synthetic": SYNTHETIC_SCHEMA}).to(device)
    model(x, [("synthetic", 2)])[0]["synthetic"]["binary"].sum().backward()
    from data_prep.align.aligner import AlignConfig, FaceAligner
    from data_prep.images import load_rgb

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        path.write_bytes(photos[0])
        FaceAligner(AlignConfig(device=str(device))).align_batch([load_rgb(path)])
    synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every stage runs (the test suite)")
    parser.add_argument("--data", type=Path, default=None,
                        help="faces and photos made by benchmarks/make_gpu_check_data.py (default: built-in faces)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the stages after the smoke (default 240)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of torch")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    from engine.device import choose_device, configure_threads, cpu_model_name

    configure_threads(args.threads)
    device = choose_device(args.device)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model_name()
    print(f"gpu_check: {name}; torch {torch.__version__}; {'quick' if args.quick else 'full'} sizes; "
          f"budget {args.budget:.0f} s after the smoke stage", flush=True)
    faces, photos = load_data(args.data, sizes)
    smoke(device, faces, photos)
    print(f"smoke stage passed in {time.perf_counter() - started:.1f} s", flush=True)
    deadline = time.perf_counter() + args.budget
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stages = [
            ("dcgan", lambda: gan_stage("dcgan", faces, device, sizes, folder / "gan")),
            ("began", lambda: gan_stage("began", faces, device, sizes, folder / "gan")),
            ("sr", lambda: sr_stage(faces, device, sizes, folder / "sr")),
            ("attributes", lambda: attribute_stage(device, sizes, folder / "attributes")),
            ("align", lambda: align_stage(photos, device, folder / "photos")),
            ("sr apply", lambda: sr_apply_stage(checkpoints["sr"], faces, device, folder / "apply")),
            ("predict", lambda: predict_stage(checkpoints["attributes"], folder / "photos", len(photos), device)),
        ]
        checkpoints: dict[str, Path] = {}
        for key, stage in stages:
            if time.perf_counter() > deadline:
                rows.append({"stage": key, "what": "not run: the budget was spent", "rate": "", "peak_mb": None,
                             "seconds": 0.0})
                continue
            if key in ("sr apply", "predict") and {"sr apply": "sr", "predict": "attributes"}[key] not in checkpoints:
                rows.append({"stage": key, "what": "not run: its training stage did not run", "rate": "",
                             "peak_mb": None, "seconds": 0.0})
                continue
            reset_peak(device)
            start = time.perf_counter()
            result = stage()
            if isinstance(result, tuple):
                result, checkpoints[key] = result
            row = {"stage": key, **result, "peak_mb": round(peak_memory_mb(device)), "seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(f"  {key}: {row['rate']} [{row['seconds']} s, peak {row['peak_mb']} MB]", flush=True)
    memory = "peak allocated (MB)" if device.type == "cuda" else "process peak RSS so far (MB)"
    print()
    print(f"| stage | what | speed | {memory} | seconds |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {row['what']} | {row['rate']} | {row['peak_mb'] if row['peak_mb'] is not None else ''} "
              f"| {row['seconds']} |")
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s on {name}")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows, "seconds": total},
                                        indent=2))
    return 0 if all(row["rate"] for row in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("FACEGAN_THREADS", str(os.cpu_count() or 1))
    raise SystemExit(main())
