"""`facegan sr train | apply | eval`: parse the arguments and call one library function each.

`train` -> gan.sr.train, `apply` -> gan.sr.apply (a folder or a dataset into a labelled folder),
`eval` -> gan.sr.evaluate (against bicubic upsampling).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.errors import FaceganError
from engine.options import add_command, add_runtime_options, add_training_flags, run_config_from_args

__all__ = ["register"]

PRESETS = "gan.sr"
_DATA_HELP = "synthetic (default), folder, or a dataset name such as celeba, lfw, utkface (data.source)"


def register(subparsers: argparse._SubParsersAction) -> None:
    sr = add_command(subparsers, "sr", "face super-resolution GAN: train, apply to folders or datasets, evaluate",
        """Face super-resolution (the thesis's residual SR-GAN, after Ledig et al. 2017): a generator of
        common / up / down blocks, pretrained on the pixel loss and fine-tuned with a Wasserstein critic.
        `train` fits it on any dataset (default: the built-in synthetic faces) through the aligned-face cache;
        `apply` super-resolves a folder or a whole dataset into a folder that keeps the labels; `eval` reports
        PSNR, SSIM, LPIPS and identity similarity beside bicubic upsampling.""")
    sub = sr.add_subparsers(dest="sr_command", metavar="SR_COMMAND", required=True)

    p = add_command(sub, "train", "train a face super-resolution model",
        """Train a face SR model. Settings come from the dataclass defaults, then --config, then the
        shortcut options below, then --set KEY=VALUE overrides (e.g. --set sr.loss.adversarial_weight=0). The HR
        faces are aligned at sr.model.output_size; LR inputs are made by the degradation in sr.degradation
        (antialiased bicubic, optional blur / noise / JPEG), recorded in the checkpoint. Steps before
        sr.pretrain_steps use the pixel loss alone, later ones add the critic. Writes OUT/config.yaml,
        OUT/checkpoints/{latest,best}.pt, sample strips (LR | bicubic | SR | HR) to OUT/samples/, metrics to
        OUT/metrics.jsonl and TensorBoard logs.""")
    add_training_flags(p, PRESETS, default_out="runs/sr", help={
        "steps": "optimiser steps to train for (trainer.max_steps; also the cosine schedule's length)",
        "seed": "seed of the data order and degradations (trainer.seed); sr.seed sets the initial weights"})
    p.add_argument("--dataset", "--data", dest="dataset", help=_DATA_HELP)
    p.add_argument("--root", help="dataset root or image folder (data.root)")
    p.set_defaults(func=_run_train)

    p = add_command(sub, "apply", "super-resolve a folder or a whole dataset, keeping the labels",
        """Super-resolve images with a trained checkpoint (its EMA generator unless --raw). Give SRC DST
        for a folder of images, or DST with --dataset NAME --root DIR for a dataset. Folder inputs are assumed
        to be faces aligned like the training data (e.g. `facegan align` outputs): each is centre-cropped to a
        square and resized with antialiased bicubic to the model's LR size (unchanged when already that size).
        Dataset inputs are aligned first, through the aligned-face cache at the model's HR size with the
        checkpoint's template, then downsampled to the LR size with the same antialiased bicubic as training.
        Outputs are PNG files at the HR size. DST/labels.csv maps each output to its source and the source's
        identity, split and labels, with the schema in DST/labels.schema.yaml, so that the folder_csv reader
        reads DST back as a labelled dataset (`facegan data info folder_csv DST`). Rows are appended and fsynced
        only after each output is written atomically, so an interrupted run resumes where it stopped; unreadable
        inputs are listed with a reason in DST/skipped.csv and skipped.""")
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by `facegan sr train` (e.g. OUT/checkpoints/latest.pt)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="SRC DST: the input folder and the output folder; with --dataset only DST")
    p.add_argument("--dataset", help="super-resolve this dataset (celeba, lfw, utkface, folder_csv, ...) instead of a folder")
    p.add_argument("--root", default="", help="the dataset's root folder (with --dataset)")
    p.add_argument("--split", default="all", help="with --dataset: train, val, test or all (default all)")
    p.add_argument("--template", help="with --dataset: aligner template (default: the checkpoint's training template)")
    p.add_argument("--no-align", action="store_true", help="with --dataset: images are already aligned; only centre-crop and resize")
    p.add_argument("--cache-dir", type=Path, help="with --dataset: the aligned-face cache folder (default DST/.cache)")
    p.add_argument("--eager", action="store_true", help="run the model as trained (no BN folding / channels_last fast path)")
    p.add_argument("--restart", action="store_true", help="discard DST's earlier outputs and manifest and start over")
    add_runtime_options(p, batch_size=64, batch_help="images per forward pass", device="auto", progress=True)
    p.set_defaults(func=_run_apply)

    p = add_command(sub, "eval", "PSNR, SSIM, LPIPS and identity similarity of a checkpoint, beside bicubic",
        """Evaluate a checkpoint on held-out HR faces: from a dataset (aligned through the aligned-face
        cache at the model's HR size with the checkpoint's template) or from a folder of aligned faces
        (centre-cropped and resized to the HR size). LR inputs are made from the HR faces by the checkpoint's
        degradation with per-image seeds (or plain antialiased bicubic with --degradation clean). Metrics, each
        beside bicubic upsampling of the same LR images: PSNR and SSIM on RGB and on the BT.601 Y channel with a
        crop border (default: the scale factor), LPIPS when its backbone weights are present (otherwise skipped
        with the reason), and dlib identity similarity to the HR face when the [metrics] extra is installed.
        Writes OUT/sr_eval.json, OUT/sr_eval.md and OUT/strips.png (LR | bicubic | SR | HR).""")
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by `facegan sr train`")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="evaluate on this dataset (synthetic, celeba, lfw, utkface, ...)")
    source.add_argument("--folder", type=Path, help="evaluate on the aligned face images in this folder (all of them)")
    p.add_argument("--root", default="", help="the dataset's root folder (with --dataset; synthetic needs none)")
    p.add_argument("--split", default="test", help="with --dataset: train, val, test or all (default test)")
    p.add_argument("-n", "--num", type=int, default=500, help="at most this many faces, evenly spaced over the split (default 500)")
    p.add_argument("--degradation", choices=("checkpoint", "clean"), default="checkpoint",
                   help="LR inputs from the checkpoint's degradation (default) or plain antialiased bicubic")
    p.add_argument("--crop-border", type=int, help="pixels removed from each side before PSNR / SSIM (default: the scale)")
    p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "squeeze"), help="LPIPS backbone (default alex)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--no-identity", action="store_true", help="skip the dlib identity similarity")
    p.add_argument("--template", help="aligner template of the faces (default: the checkpoint's); sets the identity landmark box")
    p.add_argument("--no-align", action="store_true", help="with --dataset: images are already aligned; only centre-crop and resize")
    p.add_argument("--cache-dir", type=Path, help="with --dataset: the aligned-face cache folder (default OUT/cache)")
    p.add_argument("--strips", type=int, default=8, help="faces shown in strips.png (default 8)")
    p.add_argument("--out", type=Path, help="output folder (default: the checkpoint's run folder /eval-<split or folder name>)")
    add_runtime_options(p, batch_size=64, batch_help="images per forward pass", device="auto")
    p.set_defaults(func=_run_eval)


def _run_train(args: argparse.Namespace) -> int:
    from gan.sr.config import SRRunConfig
    from gan.sr.train import train

    config = run_config_from_args(SRRunConfig, args, {"data.source": args.dataset, "data.root": args.root})
    result = train(config)
    print(f"{result['status']} at step {result['global_step']} in {result['seconds']:.0f} s; checkpoint {result['checkpoint']}")
    strips = sorted((Path(config.trainer.out_dir) / "samples").glob("strips_*.png"))
    if strips:
        print(f"latest sample strips: {strips[-1]}")
    return 130 if result["status"] == "interrupted" else 0


def _run_apply(args: argparse.Namespace) -> int:
    from engine.device import choose_device
    from gan.sr.apply import apply_sr

    if args.dataset:
        if len(args.paths) != 1:
            raise FaceganError("with --dataset give only the output folder DST (the inputs come from --dataset / --root)")
        src, dst = None, args.paths[0]
    else:
        if len(args.paths) != 2:
            raise FaceganError("give SRC DST (an input folder and an output folder), or DST with --dataset NAME --root DIR")
        src, dst = args.paths
    summary = apply_sr(
        args.checkpoint, dst, src=src, dataset=args.dataset, root=args.root, split=args.split, template=args.template,
        align=not args.no_align, cache_dir=args.cache_dir, batch_size=args.batch_size,
        device=choose_device(args.device), use_ema=not args.raw, fast=not args.eager, restart=args.restart,
        progress=not args.no_progress,
    )
    print(f"{summary['written']} written, {summary['already_done']} already done, {summary['skipped']} skipped "
          f"({summary['images_per_second']:.1f} images/s); manifest {summary['manifest']}")
    if summary["skipped"]:
        print(f"skipped inputs and reasons: {summary['skipped_file']}")
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from engine.device import choose_device
    from gan.sr.evaluate import evaluate_sr

    result = evaluate_sr(
        args.checkpoint, dataset=args.dataset, root=args.root, folder=args.folder, split=args.split, num=args.num,
        degradation=args.degradation, crop_border=args.crop_border, lpips=not args.no_lpips, lpips_net=args.lpips_net,
        identity=not args.no_identity, template=args.template, align=not args.no_align, cache_dir=args.cache_dir,
        strips=args.strips, out_dir=args.out, batch_size=args.batch_size, device=choose_device(args.device),
        use_ema=not args.raw,
    )
    print(Path(result["files"]["markdown"]).read_text())
    for name, reason in result["skipped_metrics"].items():
        print(f"{name} skipped: {reason.splitlines()[0]}")
    print(f"wrote {result['files']['json']}, {result['files']['markdown']}, {result['files']['strips']}")
    return 0
