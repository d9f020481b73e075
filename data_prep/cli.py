"""`facegan align` and `facegan data info | synth | cache`: parse the arguments and call one
library function each (data_prep.align.folder, data_prep.datasets.registry, data_prep.synthetic,
data_prep.cache)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from data_prep.align.aligner import ON_NO_FACE, SELECTIONS, AlignConfig
from data_prep.align.folder import OUTPUT_FORMATS
from data_prep.align.templates import template_names
from data_prep.align.warp import BORDER_MODES
from data_prep.datasets.record import SPLITS
from data_prep.datasets.registry import available_datasets
from data_prep.datasets.textio import DatasetOptionError
from data_prep.synthetic import DOMAINS, SyntheticConfig
from engine.options import add_command, add_runtime_options

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_align(subparsers)
    data = add_command(
        subparsers, "data", "inspect datasets, generate the built-in synthetic faces, build aligned-face caches",
        """Dataset utilities: `info` reads a dataset and prints its counts, `synth` writes the built-in
        synthetic face dataset, `cache` aligns a dataset once into memory-mapped shards.""")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    _register_info(data_sub)
    _register_synth(data_sub)
    _register_cache(data_sub)


# ------------------------------------------------------------------------------------ align
def _register_align(subparsers: argparse._SubParsersAction) -> None:
    defaults = AlignConfig()
    p = add_command(subparsers, "align", "detect faces (MTCNN) and warp them onto a 5-point template, resumably",
        """Align every image below SRC (recursively), or every image of a dataset with --dataset, onto a
        canonical 5-point face template and write the faces under DST, mirroring SRC's relative paths. DST also
        gets manifest.csv (one row per input: status aligned / center_crop / no_face / unreadable, the reason,
        score, box, landmarks and transform) and summary.json (counts and settings). Bad files are recorded with
        a reason and the run goes on. The run is resumable: rerun the same command after an interruption and it
        continues where it stopped, never rewriting a finished output.""")
    p.add_argument("src", metavar="SRC", help="folder of images, or the dataset root when --dataset is given")
    p.add_argument("dst", metavar="DST", help="output folder (created if missing; reused to resume)")
    p.add_argument("--dataset", default=None, help="""read SRC as this dataset (e.g. celeba, lfw, utkface) via the
        dataset registry; landmarks the dataset provides are used instead of detection""")
    p.add_argument("--template", default=defaults.template, help=f"""face template: one of {template_names()} or a
        .json/.yaml/.csv file with 5 points and a size (default: {defaults.template})""")
    p.add_argument("--output-size", type=int, default=defaults.output_size,
                   help=f"side of the square output in pixels (default: {defaults.output_size})")
    p.add_argument("--selection", choices=SELECTIONS, default=defaults.selection,
                   help=f"which face to keep when several are found (default: {defaults.selection})")
    p.add_argument("--min-score", type=float, default=defaults.min_score,
                   help=f"ignore faces MTCNN scores below this (default: {defaults.min_score})")
    p.add_argument("--on-no-face", choices=ON_NO_FACE, default=defaults.on_no_face,
                   help=f"""skip: record no_face and write nothing; center_crop: write the centred square instead
                       (default: {defaults.on_no_face})""")
    p.add_argument("--min-face-size", type=float, default=defaults.min_face_size,
                   help=f"smallest face to look for, box side in source pixels (default: {defaults.min_face_size:g})")
    p.add_argument("--border", choices=sorted(BORDER_MODES), default=defaults.border,
                   help=f"what fills output pixels that fall outside the photo (default: {defaults.border})")
    p.add_argument("--detect-max-side", type=int, default=defaults.detect_max_side,
                   help=f"detect on a copy of each image whose longer side is at most this (default: {defaults.detect_max_side})")
    p.add_argument("--face-fraction", type=float, default=None, metavar="FRACTION",
                   help="""the smallest face expected, as a fraction of each image's shorter side, for folders of
                       face crops (e.g. 0.3): detection skips the small-face part of its image pyramid, and an image
                       where no face is found that way is searched whole. Default: the dataset's own with --dataset
                       (celeba, utkface 0.3, lfw 0.25), else 0 (faces of any size)""")
    p.add_argument("--no-retry", dest="retry", action="store_false",
                   help="""do not re-detect images whose best face scores below --min-score (by default they are
                       retried with relaxed MTCNN thresholds and on a padded canvas)""")
    add_runtime_options(p, batch_size=defaults.batch_size, batch_help="images per detection/warp batch",
                        device=defaults.device, raw=False)
    p.add_argument("--limit", type=int, default=None, help="align only the first N inputs in sorted order")
    p.add_argument("--format", dest="fmt", choices=OUTPUT_FORMATS, default="png",
                   help="output image format: png (lossless, default) or jpg")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_align)


def _align(args: argparse.Namespace) -> int:
    from data_prep.align.folder import align_folder, format_summary

    config = AlignConfig(template=args.template, output_size=args.output_size, selection=args.selection,
                         min_score=args.min_score, on_no_face=args.on_no_face, min_face_size=args.min_face_size,
                         device=args.device, batch_size=args.batch_size, border=args.border,
                         detect_max_side=args.detect_max_side, retry=args.retry,
                         face_fraction=_face_fraction(args.face_fraction, args.dataset))
    summary = align_folder(args.src, args.dst, config, dataset=args.dataset, fmt=args.fmt, limit=args.limit,
                           progress=not args.quiet)
    print(format_summary(summary))
    print(f"manifest: {args.dst}/manifest.csv  summary: {args.dst}/summary.json")
    return 0


def _face_fraction(given: float | None, dataset: str | None) -> float:
    from data_prep.datasets.registry import expected_face_fraction

    if given is not None:
        return given
    return expected_face_fraction(dataset) if dataset else 0.0


# ------------------------------------------------------------------------------------ data info
def _register_info(data_sub: argparse._SubParsersAction) -> None:
    p = add_command(data_sub, "info", "read a dataset and print its splits, tasks and skipped samples",
        f"""Read a dataset with its reader and print the number of images and identities per split, each
        task's kind with its coverage and positive rate, class counts or value range, and the samples that were
        skipped with the reason. Datasets: {", ".join(available_datasets())}.""")
    p.add_argument("name", help="dataset reader name: " + ", ".join(available_datasets()))
    p.add_argument("root", help="the dataset's root folder (as downloaded)")
    p.add_argument("--split", default=None, help="only this split: train, val or test (default: all)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a reader option, repeatable, e.g. --option images=wild (CelebA) or --option test_fold=0 (Adience)")
    p.add_argument("--max-skipped", type=int, default=10, help="how many skipped samples to list (default 10)")
    p.set_defaults(func=_info)


def _reader_options(items: list[str] | None) -> dict[str, Any]:
    """`['test_fold=0', 'images=wild']` -> {'test_fold': 0, 'images': 'wild'} (YAML scalars)."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DatasetOptionError(f"--option takes KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else None
    return options


def _info(args: argparse.Namespace) -> int:
    from data_prep.datasets.registry import describe_dataset, read_dataset

    dataset = read_dataset(args.name, args.root, args.split, _reader_options(args.option))
    print(describe_dataset(dataset, args.max_skipped))
    return 0


# ------------------------------------------------------------------------------------ data synth
def _register_synth(data_sub: argparse._SubParsersAction) -> None:
    defaults = SyntheticConfig()
    p = add_command(data_sub, "synth", "write the built-in synthetic face dataset",
        """Draw procedural cartoon faces with known labels (Smiling, Eyeglasses, Male, Bangs,
        Wearing_Hat, Hair_Color, Age), 5 landmarks and identities, in a clean 'studio' and a degraded 'wild'
        domain. Writes OUT/images/<domain>/*.png, OUT/labels.csv and OUT/schema.json. Rerunning with the same
        options reuses a complete dataset; an interrupted one is regenerated.""")
    p.add_argument("out", type=Path, help="output folder (created; must be empty or a previous synth output)")
    p.add_argument("--num-identities", type=int, default=defaults.num_identities,
                   help=f"number of people (default {defaults.num_identities})")
    p.add_argument("--images-per-identity", type=int, default=defaults.images_per_identity,
                   help=f"images of each person in each domain (default {defaults.images_per_identity})")
    p.add_argument("--size", type=int, default=defaults.image_size, help=f"image side in pixels (default {defaults.image_size})")
    p.add_argument("--domains", nargs="+", default=list(defaults.domains), choices=DOMAINS,
                   help="domains to draw (default: studio wild)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default 0)")
    p.add_argument("--preview", type=Path, default=None, help="also write a PNG grid of samples of every domain with their labels")
    add_runtime_options(p, device=None, threads=False, raw=False, progress=True)
    p.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    from data_prep.synthetic import write_synthetic

    config = SyntheticConfig(num_identities=args.num_identities, images_per_identity=args.images_per_identity,
                             image_size=args.size, domains=tuple(args.domains), seed=args.seed)
    dataset, preview = write_synthetic(args.out, config, args.preview, progress=not args.no_progress)
    print(dataset.summary())
    if preview is not None:
        print(f"preview: {preview}")
    return 0


# ------------------------------------------------------------------------------------ data cache
def _register_cache(data_sub: argparse._SubParsersAction) -> None:
    p = add_command(data_sub, "cache", "align a dataset once into memory-mapped uint8 shards for fast training",
        """Read a dataset, align every face with the MTCNN aligner (or, with --no-align, only
        centre-crop and resize already-aligned images) and store the faces with their labels in OUT as raw uint8
        shards plus index.json. Unreadable images and images without a face are left out and listed in
        index.json. An interrupted build resumes; a cache of another source is rebuilt. Under torchrun
        (torchrun --standalone --nproc-per-node N .venv/bin/facegan data cache ...) the processes build alternate
        shards and rank 0 writes the index.""")
    p.add_argument("out", type=Path, help="cache folder to create (or resume, or reuse)")
    p.add_argument("--dataset", required=True,
                   help="dataset reader name (celeba, lfw, utkface, ... or synthetic); see `facegan data info --help`")
    p.add_argument("--root", type=Path, required=True, help="the dataset's folder")
    p.add_argument("--size", type=int, default=64, help="side of the cached faces in pixels (default 64)")
    p.add_argument("--no-align", action="store_true",
                   help="do not detect or align: centre-crop and resize (for already-aligned images)")
    p.add_argument("--template", default="thesis",
                   help=f"alignment template: one of {template_names()} or a template file (default thesis)")
    p.add_argument("--split", choices=SPLITS, default=None, help="cache only this split (default: all)")
    p.add_argument("--shard-size", type=int, default=None, help="faces per shard file (default: about 64 MiB per shard)")
    p.add_argument("--face-fraction", type=float, default=0.0, metavar="FRACTION",
                   help="""the smallest face expected, as a share of each image's shorter side (faster on face crops,
                       e.g. 0.3; see `facegan align --help`). Default 0, as training commands align: a cache made with
                       another value has another fingerprint, and a training run would not reuse it""")
    p.add_argument("--workers", type=int, default=2, help="threads that decode images (default 2; 0 = none)")
    p.add_argument("--on-stale", choices=("rebuild", "error"), default="rebuild",
                   help="what to do when OUT holds a cache of another source (default rebuild)")
    add_runtime_options(p, device="auto", raw=False, progress=True)
    p.set_defaults(func=_cache)


def _cache(args: argparse.Namespace) -> int:
    from data_prep.cache import INDEX_FILE, cache_dataset

    cache = cache_dataset(args.dataset, args.root, args.out, args.size, align=not args.no_align, template=args.template,
                          split=args.split, shard_size=args.shard_size, workers=args.workers, device=args.device,
                          progress=not args.no_progress, on_stale=args.on_stale, face_fraction=args.face_fraction)
    print(cache.summary())
    for item in cache.skipped[:10]:
        print(f"  skipped {item}")
    if len(cache.skipped) > 10:
        print(f"  ... and {len(cache.skipped) - 10} more (listed in {cache.path / INDEX_FILE})")
    return 0
