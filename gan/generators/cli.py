"""`facegan gan train | sample | eval`: parse the arguments and call one library function each."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.options import add_command, add_runtime_options, add_training_flags, run_config_from_args

__all__ = ["register"]

PRESETS = "gan.generators"


def register(subparsers: argparse._SubParsersAction) -> None:
    gan = add_command(subparsers, "gan", "train face generators (DCGAN, BEGAN, WGAN-GP) and sample from them",
        """Face generators: `train` runs DCGAN (Radford et al. 2016), BEGAN (Berthelot et al. 2017) or
        WGAN-GP (Gulrajani et al. 2017) on any dataset (default: the built-in synthetic faces) through the
        aligned-face cache; `sample` draws faces and latent interpolations from a checkpoint; `eval` measures
        FD-face, FID and KID against real faces.""")
    sub = gan.add_subparsers(dest="gan_command", metavar="GAN_COMMAND", required=True)

    p = add_command(sub, "train", "train a face generator",
        """Train a face generator. Settings come from the dataclass defaults, then --config, then the
        options below, then --set KEY=VALUE overrides (e.g. --set gan.began.gamma=0.7). The resolved settings
        are written to OUT/config.yaml; checkpoints to OUT/checkpoints/{latest,best}.pt; sample grids to
        OUT/samples/; TensorBoard logs to OUT/tensorboard/ and metrics to OUT/metrics.jsonl.""")
    add_training_flags(p, PRESETS, default_out="runs/gan",
                       help={"seed": "seed of the data order and noise (trainer.seed); gan.seed sets the initial weights"})
    p.add_argument("--model", choices=("dcgan", "began"), help="generator family (gan.model)")
    p.add_argument("--loss", choices=("nonsaturating", "wgan-gp", "hinge"), help="DCGAN adversarial loss (gan.dcgan.loss)")
    p.add_argument("--image-size", type=int, choices=(32, 64, 128), help="output resolution in pixels (gan.image_size)")
    p.add_argument("--data", help="synthetic, folder, or a dataset name such as celeba (data.source)")
    p.add_argument("--root", help="dataset root or image folder (data.root)")
    p.set_defaults(func=_train)

    p = add_command(sub, "sample", "draw faces and latent interpolations from a checkpoint",
        """Draw N faces from a GAN checkpoint (the EMA generator when the run kept one) as PNG files
        and/or one grid, and optionally latent interpolation strips along slerp paths between random latents.""")
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by `facegan gan train` (e.g. OUT/checkpoints/latest.pt)")
    p.add_argument("--out", type=Path, required=True, help="folder for the images")
    p.add_argument("-n", "--num", type=int, default=64, help="faces to draw (default 64)")
    p.add_argument("--grid-only", action="store_true", help="write only grid.png, not one PNG per face")
    p.add_argument("--interpolate", type=int, default=0, metavar="ROWS",
                   help="also write interpolation.png with this many slerp strips (default 0: none)")
    p.add_argument("--interpolation-steps", type=int, default=8, help="images per interpolation strip (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws (default 0)")
    add_runtime_options(p)
    p.set_defaults(func=_sample)

    p = add_command(sub, "eval", "FD-face, FID and KID of generated faces against a reference set",
        """Compare generated faces with real ones. FAKE is a GAN checkpoint (N faces are sampled from
        it) or a folder of generated images. The reference faces are read from a dataset (or folder) and aligned
        exactly as for training (same template and size, through the aligned-face cache). Metrics: fd-face
        (Frechet distance in the embedding space of dlib's face-recognition ResNet; needs `pip install
        'facegan[metrics]'`), fid and kid (the standard Inception; its weights file must be present locally, the
        message says where). Every number is printed with its protocol: feature extractor and weights, resize,
        sample counts and reference split.""")
    p.add_argument("fake", type=Path, help="a GAN checkpoint (.pt) to sample from, or a folder of generated images")
    p.add_argument("--real", required=True, help="reference data: synthetic, folder, or a dataset name such as celeba")
    p.add_argument("--root", default="", help="dataset root or image folder of the reference")
    p.add_argument("--split", default="test",
                   help="reference split (default test: faces the generator never saw; 'all' for every image)")
    p.add_argument("--metrics", default="fd-face", help="comma-separated: fd-face, fid, kid (default fd-face)")
    p.add_argument("-n", "--num", type=int, default=1000, help="faces to generate, and the most real faces to use (default 1000)")
    p.add_argument("--image-size", type=int, help="reference face size when FAKE is a folder (default: the checkpoint's)")
    p.add_argument("--template", default="thesis", help="aligner template of the reference faces and the embedder (default thesis)")
    p.add_argument("--cache-dir", type=Path, help="""cache for the aligned reference faces (default: beside the
        checkpoint's run, RUN/eval-cache/<real>-<split>-<size>; runs/eval-cache/... for a folder)""")
    p.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws and KID subsets (default 0)")
    add_runtime_options(p)
    p.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from gan.generators.config import GANRunConfig
    from gan.generators.train import train

    config = run_config_from_args(GANRunConfig, args, {
        "gan.model": args.model, "gan.dcgan.loss": args.loss, "gan.image_size": args.image_size,
        "data.source": args.data, "data.root": args.root,
    })
    result = train(config)
    grids = sorted((Path(config.trainer.out_dir) / "samples").glob("samples_*.png"))
    print(f"{result['status']} at step {result['global_step']} in {result['seconds']:.0f} s; checkpoint {result['checkpoint']}")
    if grids:
        print(f"latest sample grid: {grids[-1]}")
    return 130 if result["status"] == "interrupted" else 0


def _sample(args: argparse.Namespace) -> int:
    from gan.generators.inference import sample_faces

    summary = sample_faces(args.checkpoint, args.out, args.num, args.grid_only, args.interpolate,
                           args.interpolation_steps, args.seed, use_ema=not args.raw, device=args.device)
    print(f"wrote {summary['faces']} faces to {summary['out']}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from gan.generators.evaluate import evaluate_generator

    summary = evaluate_generator(args.fake, args.real, args.root, args.split, args.metrics.split(","), args.num,
                                 args.image_size, args.template, args.cache_dir, args.out, args.seed,
                                 use_ema=not args.raw, device=args.device)
    for name, result in summary["results"].items():
        line = f"{name}: {result['fd']:.4f}"
        if name == "fid" and result.get("kid_mean") is not None:
            line += f"   KID: {result['kid_mean']:.5f} +- {result['kid_std']:.5f}"
        print(f"{line}   ({result['num_fake']} generated vs {result['num_real']} real)")
        for key, value in result["protocol"].items():
            print(f"    {key}: {value}")
    print(f"generated: {summary['generated']}")
    if args.out:
        print(f"wrote {args.out}")
    return 0
