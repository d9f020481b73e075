"""`facegan gan train | sample`: train a face generator, then draw faces and interpolations."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.checkpoint import load_checkpoint
from engine.config import from_dict, load_config, save_config, to_dict
from engine.device import configure_threads
from engine.errors import FaceganError
from engine.trainer import Trainer, TrainerConfig
from gan.config import GANConfig
from gan.data import GANDataConfig, build_gan_dataset

__all__ = ["GANRunConfig", "train", "load_generator_step", "register"]

log = logging.getLogger(__name__)

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs" / "gan"


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(
        out_dir="runs/gan", max_steps=2000, batch_size=64, ema_decay=0.999, ema_modules=("generator",),
        sample_every=250, checkpoint_every=500, log_every=10,
    )


@dataclass
class GANRunConfig:
    """Everything one `facegan gan train` run needs; presets in configs/gan/*.yaml."""

    gan: GANConfig = field(default_factory=GANConfig)
    data: GANDataConfig = field(default_factory=GANDataConfig)
    train: TrainerConfig = field(default_factory=_default_trainer)


def train(config: GANRunConfig) -> dict:
    """Build the data, the step and the Trainer, run it, and return the Trainer's result."""
    from gan.steps import build_gan_step

    out_dir = Path(config.train.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    dataset = build_gan_dataset(config.data, config.gan.image_size, out_dir, progress=config.train.progress)
    step = build_gan_step(config.gan)
    run_config = {"gan": to_dict(config.gan), "data": to_dict(config.data)}
    log.info("training %s at %d px on %d faces from %s", config.gan.model, config.gan.image_size, len(dataset), config.data.source)
    return Trainer(step, dataset, config.train, run_config).fit()


def load_generator_step(checkpoint: str | Path, use_ema: bool = True, device: str = "cpu"):
    """The GAN step of a training checkpoint, its generator holding the EMA weights if present."""
    from gan.steps import build_gan_step

    state = load_checkpoint(checkpoint, map_location=device)
    if "run_config" not in state or "gan" not in state["run_config"]:
        raise FaceganError(f"{checkpoint} is not a facegan GAN checkpoint (no gan config inside)")
    gan_config = from_dict(GANConfig, state["run_config"]["gan"])
    step = build_gan_step(gan_config)
    weights = state["ema"].get("generator") if use_ema else None
    if weights is None:
        weights = state["modules"]["generator"]
    step.generator.load_state_dict(weights)
    step.generator.to(device).eval()
    return step, state


# ----------------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    gan = subparsers.add_parser(
        "gan",
        help="train face generators (DCGAN, BEGAN, WGAN-GP) and sample from them",
        description="Face generators: `train` runs DCGAN / BEGAN / WGAN-GP on any dataset (default: the built-in "
        "synthetic faces) through the aligned-face cache; `sample` draws faces and latent interpolations from a checkpoint.",
    )
    sub = gan.add_subparsers(dest="gan_command", metavar="GAN_COMMAND", required=True)

    p = sub.add_parser(
        "train",
        help="train a face generator",
        description="Train a face generator. Settings come from the dataclass defaults, then --config, then the "
        "shortcut options below, then --set KEY=VALUE overrides (e.g. --set gan.began.gamma=0.7). The resolved "
        "settings are written to OUT/config.yaml; checkpoints to OUT/checkpoints/{latest,best}.pt; sample grids to "
        "OUT/samples/; TensorBoard logs to OUT/tensorboard/ and metrics to OUT/metrics.jsonl.",
    )
    p.add_argument("--config", type=Path, help=f"YAML preset (see {PRESETS_DIR}: dcgan64.yaml, began64.yaml, wgan-gp64.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting by its dotted path (repeatable), e.g. train.max_steps=500")
    p.add_argument("--out", help="run folder (train.out_dir; default runs/gan)")
    p.add_argument("--model", choices=("dcgan", "began"), help="generator family (gan.model)")
    p.add_argument("--loss", choices=("nonsaturating", "wgan-gp", "hinge"), help="DCGAN adversarial loss (gan.dcgan.loss)")
    p.add_argument("--image-size", type=int, choices=(32, 64, 128), help="output resolution in pixels (gan.image_size)")
    p.add_argument("--data", help="synthetic, folder, or a dataset name such as celeba (data.source)")
    p.add_argument("--root", help="dataset root or image folder (data.root)")
    p.add_argument("--steps", type=int, help="optimiser steps to train for (train.max_steps)")
    p.add_argument("--minutes", type=float, help="wall-clock training budget; stops and saves when spent (train.max_seconds)")
    p.add_argument("--batch-size", type=int, help="global batch size, split over processes (train.batch_size)")
    p.add_argument("--seed", type=int, help="seed of the data order and noise (train.seed); gan.seed sets the initial weights")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (train.device)")
    p.add_argument("--threads", type=int, help="torch CPU threads (train.threads)")
    p.add_argument("--amp", action="store_true", help="mixed precision (train.amp): float16 on CUDA; bfloat16 on a CPU with native bfloat16 (AVX512-BF16 or AMX); float32 elsewhere")
    p.add_argument("--deterministic", action="store_true", help="bit-reproducible kernels, slower (train.deterministic)")
    p.add_argument("--resume", action="store_true", help="continue OUT's latest checkpoint exactly where it stopped")
    p.add_argument("--force", action="store_true", help="with --resume: allow a changed configuration")
    p.set_defaults(func=_run_train)

    p = sub.add_parser(
        "sample",
        help="draw faces and latent interpolations from a checkpoint",
        description="Draw N faces from a GAN checkpoint (the EMA generator when the run kept one) as PNG files "
        "and/or one grid, and optionally latent interpolation strips along slerp paths between random latents.",
    )
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by `facegan gan train` (e.g. OUT/checkpoints/latest.pt)")
    p.add_argument("--out", type=Path, required=True, help="folder for the images")
    p.add_argument("-n", "--num", type=int, default=64, help="faces to draw (default 64)")
    p.add_argument("--grid-only", action="store_true", help="write only grid.png, not one PNG per face")
    p.add_argument("--interpolate", type=int, default=0, metavar="ROWS",
                   help="also write interpolation.png with this many slerp strips (default 0: none)")
    p.add_argument("--interpolation-steps", type=int, default=8, help="images per interpolation strip (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws (default 0)")
    p.add_argument("--raw", action="store_true", help="use the raw generator instead of its EMA copy")
    p.add_argument("--device", default="cpu", help="device to sample on (default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: $FACEGAN_THREADS or all cores)")
    p.set_defaults(func=_run_sample)

    p = sub.add_parser(
        "eval",
        help="FD-face, FID and KID of generated faces against a reference set",
        description="Compare generated faces with real ones. FAKE is a GAN checkpoint (N faces are sampled from it) or "
        "a folder of generated images. The reference faces are read from a dataset (or folder) and aligned exactly as "
        "for training (same template and size, through the aligned-face cache). Metrics: fd-face (Frechet distance in "
        "the embedding space of dlib's face-recognition ResNet; needs `pip install 'facegan[metrics]'`), fid and kid "
        "(the standard Inception; its weights file must be present locally, the message says where). Every number is "
        "printed with its protocol: feature extractor and weights, resize, sample counts and reference split.",
    )
    p.add_argument("fake", type=Path, help="a GAN checkpoint (.pt) to sample from, or a folder of generated images")
    p.add_argument("--real", required=True, help="reference data: synthetic, folder, or a dataset name such as celeba")
    p.add_argument("--root", default="", help="dataset root or image folder of the reference")
    p.add_argument("--split", default="test", help="reference split (default test: faces the generator never saw; 'all' for every image)")
    p.add_argument("--metrics", default="fd-face", help="comma-separated: fd-face, fid, kid (default fd-face)")
    p.add_argument("-n", "--num", type=int, default=1000, help="faces to generate, and the most real faces to use (default 1000)")
    p.add_argument("--image-size", type=int, help="reference face size when FAKE is a folder (default: the checkpoint's)")
    p.add_argument("--template", default="thesis", help="aligner template of the reference faces and the embedder (default thesis)")
    p.add_argument("--cache-dir", type=Path, help="cache for the aligned reference faces (default runs/eval-cache/<real>-<split>-<size>)")
    p.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws and KID subsets (default 0)")
    p.add_argument("--raw", action="store_true", help="sample the raw generator instead of its EMA copy")
    p.add_argument("--device", default="cpu", help="device for sampling and feature extraction (default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: $FACEGAN_THREADS or all cores)")
    p.set_defaults(func=_run_eval)


def _run_train(args: argparse.Namespace) -> int:
    shortcuts = {
        "train.out_dir": args.out, "gan.model": args.model, "gan.dcgan.loss": args.loss, "gan.image_size": args.image_size,
        "data.source": args.data, "data.root": args.root, "train.max_steps": args.steps, "train.batch_size": args.batch_size,
        "train.max_seconds": args.minutes * 60 if args.minutes else None,
        "train.seed": args.seed, "train.device": args.device, "train.threads": args.threads,
        "train.amp": True if args.amp else None, "train.deterministic": True if args.deterministic else None,
        "train.resume": True if args.resume else None, "train.force_resume": True if args.force else None,
    }
    overrides = [f"{key}={value}" for key, value in shortcuts.items() if value is not None] + list(args.overrides)
    config = load_config(GANRunConfig, args.config, overrides)
    result = train(config)
    out = Path(config.train.out_dir)
    grids = sorted((out / "samples").glob("samples_*.png"))
    print(f"{result['status']} at step {result['global_step']} in {result['seconds']:.0f} s; checkpoint {result['checkpoint']}")
    if grids:
        print(f"latest sample grid: {grids[-1]}")
    return 130 if result["status"] == "interrupted" else 0


def _run_sample(args: argparse.Namespace) -> int:
    from engine.logging import save_image_grid
    from PIL import Image

    if args.num < 1:
        raise FaceganError("--num must be at least 1")
    configure_threads(args.threads)
    step, _ = load_generator_step(args.checkpoint, use_ema=not args.raw, device=args.device)
    rng = torch.Generator(device=args.device).manual_seed(args.seed)
    images = step.sample(args.num, generator=rng)
    args.out.mkdir(parents=True, exist_ok=True)
    save_image_grid(images, args.out / "grid.png")
    if not args.grid_only:
        pixels = ((images.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for i, array in enumerate(pixels):
            Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(args.out / f"{i:05d}.png")
    if args.interpolate:
        from gan.models.latent import sample_latent

        cfg = step.config
        ends = sample_latent(2 * args.interpolate, cfg.latent_dim, cfg.latent_distribution, generator=rng, device=args.device)
        ends = ends.view(args.interpolate, 2, -1)
        strips = step.interpolate(ends[:, 0], ends[:, 1], args.interpolation_steps)
        save_image_grid(strips, args.out / "interpolation.png", nrow=args.interpolation_steps)
    print(f"wrote {args.num} faces to {args.out}")
    return 0


def _fake_batches(step, n: int, seed: int, device: str, batch_size: int = 100):
    from gan.metrics.batch import to_uint8

    rng = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, n, batch_size):
        yield to_uint8(step.sample(min(batch_size, n - start), generator=rng))


def _run_eval(args: argparse.Namespace) -> int:
    import json

    from engine.checkpoint import atomic_write_text
    from gan.metrics.fid import compute_fid_kid

    wanted = [m.strip().lower() for m in args.metrics.split(",") if m.strip()]
    unknown = set(wanted) - {"fd-face", "fid", "kid"}
    if unknown or not wanted:
        raise FaceganError(f"--metrics takes fd-face, fid and/or kid; got {args.metrics!r}")
    if args.num < 2:
        raise FaceganError("--num must be at least 2 (a covariance needs two samples)")
    configure_threads(args.threads)
    if args.fake.is_file():
        step, _ = load_generator_step(args.fake, use_ema=not args.raw, device=args.device)
        image_size = step.config.image_size
        fake = lambda: _fake_batches(step, args.num, args.seed, args.device)  # noqa: E731 (fresh per metric)
        fake_what = f"{args.num} samples of {args.fake} ({'raw' if args.raw else 'EMA'} generator, seed {args.seed})"
    elif args.fake.is_dir():
        if not args.image_size:
            raise FaceganError("FAKE is a folder: give --image-size, the side of the generated faces")
        image_size = args.image_size
        fake = lambda: args.fake  # noqa: E731
        fake_what = f"images in {args.fake}"
    else:
        raise FaceganError(f"{args.fake} is neither a checkpoint file nor a folder")

    cache_dir = args.cache_dir or Path("runs") / "eval-cache" / f"{args.real}-{args.split}-{image_size}"
    data = GANDataConfig(source=args.real, root=args.root, split=args.split, template=args.template, flip=False,
                         cache_dir=str(cache_dir))
    reference = build_gan_dataset(data, image_size, cache_dir.parent)
    count = min(args.num, len(reference))
    real = [reference.get_batch(list(range(start, min(start + 100, count)))) for start in range(0, count, 100)]
    reference_what = f"{args.real} split={args.split}, {count} faces aligned with template {args.template} at {image_size} px"

    results = {}
    if "fd-face" in wanted:
        from gan.metrics.face_embedding import FaceEmbedder

        results["fd-face"] = compute_fid_kid(real, fake(), FaceEmbedder(template=args.template), kid=False,
                                             seed=args.seed, reference=reference_what, device=args.device)
    if "fid" in wanted or "kid" in wanted:
        results["fid"] = compute_fid_kid(real, fake(), None, kid="kid" in wanted, seed=args.seed,
                                         reference=reference_what, device=args.device)
    for name, result in results.items():
        print(f"{name}: {result['fd']:.4f}", end="")
        if name == "fid" and "kid" in wanted and result.get("kid_mean") is not None:
            print(f"   KID: {result['kid_mean']:.5f} +- {result['kid_std']:.5f}", end="")
        print(f"   ({result['num_fake']} generated vs {result['num_real']} real)")
        for key, value in result["protocol"].items():
            print(f"    {key}: {value}")
    print(f"generated: {fake_what}")
    if args.out:
        atomic_write_text(args.out, json.dumps({"generated": fake_what, "results": results}, indent=2, default=str))
        print(f"wrote {args.out}")
    return 0
