"""`facegan align SRC DST`: align a folder of photos (or a dataset) to a face template."""
from __future__ import annotations

import argparse

from data_prep.align.aligner import ON_NO_FACE, SELECTIONS, AlignConfig
from data_prep.align.folder import OUTPUT_FORMATS, align_folder, format_summary
from data_prep.align.templates import template_names
from data_prep.align.warp import BORDER_MODES

__all__ = ["register", "config_from_args"]

_DEFAULTS = AlignConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align",
        help="detect faces (MTCNN) and warp them onto a 5-point template, resumably",
        description=(
            "Align every image below SRC (recursively), or every image of a dataset with --dataset, "
            "onto a canonical 5-point face template and write the faces under DST, mirroring SRC's "
            "relative paths. DST also gets manifest.csv (one row per input: status aligned / center_crop / "
            "no_face / unreadable, the reason, score, box, landmarks and transform) and summary.json "
            "(counts and settings). Bad files are recorded with a reason and the run goes on. The run is "
            "resumable: rerun the same command after an interruption and it continues where it stopped, "
            "never rewriting a finished output."
        ),
    )
    parser.add_argument("src", metavar="SRC", help="folder of images, or the dataset root when --dataset is given")
    parser.add_argument("dst", metavar="DST", help="output folder (created if missing; reused to resume)")
    parser.add_argument(
        "--dataset",
        default=None,
        help="read SRC as this dataset (e.g. celeba, lfw, utkface) via the dataset registry; landmarks "
        "the dataset provides are used instead of detection",
    )
    parser.add_argument(
        "--template",
        default=_DEFAULTS.template,
        help=f"face template: one of {template_names()} or a .json/.yaml/.csv file with 5 points and a size "
        f"(default: {_DEFAULTS.template})",
    )
    parser.add_argument(
        "--output-size", type=int, default=_DEFAULTS.output_size, help=f"side of the square output in pixels (default: {_DEFAULTS.output_size})"
    )
    parser.add_argument(
        "--selection",
        choices=SELECTIONS,
        default=_DEFAULTS.selection,
        help=f"which face to keep when several are found (default: {_DEFAULTS.selection})",
    )
    parser.add_argument(
        "--min-score", type=float, default=_DEFAULTS.min_score, help=f"ignore faces MTCNN scores below this (default: {_DEFAULTS.min_score})"
    )
    parser.add_argument(
        "--on-no-face",
        choices=ON_NO_FACE,
        default=_DEFAULTS.on_no_face,
        help="skip: record no_face and write nothing; center_crop: write the centred square instead "
        f"(default: {_DEFAULTS.on_no_face})",
    )
    parser.add_argument(
        "--min-face-size",
        type=float,
        default=_DEFAULTS.min_face_size,
        help=f"smallest face to look for, box side in source pixels (default: {_DEFAULTS.min_face_size:g})",
    )
    parser.add_argument(
        "--border",
        choices=sorted(BORDER_MODES),
        default=_DEFAULTS.border,
        help=f"what fills output pixels that fall outside the photo (default: {_DEFAULTS.border})",
    )
    parser.add_argument(
        "--detect-max-side",
        type=int,
        default=_DEFAULTS.detect_max_side,
        help=f"detect on a copy of each image whose longer side is at most this (default: {_DEFAULTS.detect_max_side})",
    )
    parser.add_argument(
        "--no-retry",
        dest="retry",
        action="store_false",
        help="do not re-detect images whose best face scores below --min-score (by default they are retried "
        "with relaxed MTCNN thresholds and on a padded canvas)",
    )
    parser.add_argument("--device", default=_DEFAULTS.device, help=f"auto, cpu, cuda, cuda:N or mps (default: {_DEFAULTS.device})")
    parser.add_argument(
        "--batch-size", type=int, default=_DEFAULTS.batch_size, help=f"images per detection/warp batch (default: {_DEFAULTS.batch_size})"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: $FACEGAN_THREADS, else all cores)"
    )
    parser.add_argument("--limit", type=int, default=None, help="align only the first N inputs in sorted order")
    parser.add_argument(
        "--format", dest="fmt", choices=OUTPUT_FORMATS, default="png", help="output image format: png (lossless, default) or jpg"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> AlignConfig:
    return AlignConfig(
        template=args.template,
        output_size=args.output_size,
        selection=args.selection,
        min_score=args.min_score,
        on_no_face=args.on_no_face,
        min_face_size=args.min_face_size,
        device=args.device,
        batch_size=args.batch_size,
        border=args.border,
        detect_max_side=args.detect_max_side,
        retry=args.retry,
    )


def run(args: argparse.Namespace) -> int:
    from engine.device import configure_threads

    configure_threads(args.threads)
    summary = align_folder(
        args.src,
        args.dst,
        config_from_args(args),
        dataset=args.dataset,
        fmt=args.fmt,
        limit=args.limit,
        progress=not args.quiet,
    )
    print(format_summary(summary))
    print(f"manifest: {args.dst}/manifest.csv  summary: {args.dst}/summary.json")
    return 0
