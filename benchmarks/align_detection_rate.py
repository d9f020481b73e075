"""How often does the aligner find the face in real face crops, and how fast?

Runs `FaceAligner` (MTCNN detection + Umeyama + warp) on UTKFace's crop_part1 (200x200 chips,
faces filling the frame) and CelebA's img_align_celeba (178x218), and prints per dataset:
the detection rate (aligned with score >= min_score), score quantiles, images per second
(decode excluded and included), and the files that failed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/align_detection_rate.py --limit 100

Data root: --data-root, else $FACEGAN_DATA, else ../shared/data beside the repository.
--limit N takes N images per dataset, evenly spaced over the sorted file list (deterministic).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_prep.align.aligner import AlignConfig, FaceAligner  # noqa: E402
from data_prep.images import ImageLoadError, load_rgb  # noqa: E402
from engine.device import configure_threads  # noqa: E402

DATASETS = {
    "utkface": "utkface/crop_part1",
    "celeba": "celeba/img_align_celeba",
}


def default_data_root() -> Path:
    return Path(os.environ.get("FACEGAN_DATA", REPO.parent / "shared" / "data")).resolve()


def subsample(files: list[Path], limit: int | None) -> list[Path]:
    if limit is None or limit >= len(files):
        return files
    index = np.unique(np.linspace(0, len(files) - 1, num=limit).round().astype(int))
    return [files[i] for i in index]


def measure(name: str, folder: Path, aligner: FaceAligner, limit: int | None, batch_size: int) -> dict:
    files = subsample(sorted(p for p in folder.iterdir() if p.is_file()), limit)
    unreadable, failures, scores = [], [], []
    aligned = 0
    t_total = time.perf_counter()
    t_align = 0.0
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images, names = [], []
        for path in chunk:
            try:
                images.append(load_rgb(path))
                names.append(path.name)
            except ImageLoadError as exc:
                unreadable.append((path.name, exc.reason))
        t0 = time.perf_counter()
        results = aligner.align_batch(images)
        t_align += time.perf_counter() - t0
        for file_name, result in zip(names, results):
            if result.status == "aligned":
                aligned += 1
                scores.append(result.score)
            else:
                failures.append((file_name, result.reason))
    elapsed = time.perf_counter() - t_total
    readable = len(files) - len(unreadable)
    scores_arr = np.asarray(scores) if scores else np.zeros(1)
    return {
        "dataset": name,
        "images": len(files),
        "readable": readable,
        "aligned": aligned,
        "detection_rate": aligned / max(1, readable),
        "score_min": float(scores_arr.min()),
        "score_p01": float(np.quantile(scores_arr, 0.01)),
        "score_median": float(np.median(scores_arr)),
        "images_per_s_align": readable / t_align if t_align > 0 else 0.0,
        "images_per_s_with_decode": len(files) / elapsed if elapsed > 0 else 0.0,
        "failures": failures,
        "unreadable": unreadable,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding utkface/ and celeba/")
    parser.add_argument("--limit", type=int, default=None, help="images per dataset (evenly spaced; default all)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated subset of {list(DATASETS)}")
    parser.add_argument("--template", default="thesis", help="template name or file")
    parser.add_argument("--output-size", type=int, default=128, help="output side in pixels")
    parser.add_argument("--min-score", type=float, default=AlignConfig.min_score, help="score needed to count as aligned")
    parser.add_argument("--min-face-size", type=float, default=AlignConfig.min_face_size, help="MTCNN smallest face, px")
    parser.add_argument("--no-retry", dest="retry", action="store_false", help="disable the relaxed/padded re-detection")
    parser.add_argument("--batch-size", type=int, default=32, help="images per align_batch call")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default $FACEGAN_THREADS or all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    threads = configure_threads(args.threads)
    root = (args.data_root or default_data_root()).resolve()
    config = AlignConfig(template=args.template, output_size=args.output_size, min_score=args.min_score,
                         min_face_size=args.min_face_size, retry=args.retry, device=args.device, batch_size=args.batch_size)
    aligner = FaceAligner(config)
    print(f"data root {root}; device {aligner.device}; torch threads {threads}; limit {args.limit}")
    print(f"config {json.dumps(config.to_dict())}")
    results = []
    for name in [n.strip() for n in args.datasets.split(",") if n.strip()]:
        if name not in DATASETS:
            parser.error(f"unknown dataset {name!r}; choose from {list(DATASETS)}")
        folder = root / DATASETS[name]
        if not folder.is_dir():
            print(f"{name}: SKIPPED, folder not found: {folder}")
            continue
        r = measure(name, folder, aligner, args.limit, args.batch_size)
        results.append(r)
        print(
            f"{name}: {r['aligned']}/{r['readable']} aligned = {100 * r['detection_rate']:.2f}% "
            f"(score >= {args.min_score}); score min {r['score_min']:.4f}, p1 {r['score_p01']:.4f}, "
            f"median {r['score_median']:.4f}; {r['images_per_s_align']:.1f} img/s aligning, "
            f"{r['images_per_s_with_decode']:.1f} img/s with decoding"
        )
        for file_name, reason in r["failures"]:
            print(f"  not aligned: {file_name}: {reason}")
        for file_name, reason in r["unreadable"]:
            print(f"  unreadable: {file_name}: {reason}")
    if results:
        total = sum(r["readable"] for r in results)
        aligned = sum(r["aligned"] for r in results)
        print(f"overall: {aligned}/{total} aligned = {100 * aligned / max(1, total):.2f}%")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
