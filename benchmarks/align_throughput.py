"""`facegan align` end to end against bare facenet-pytorch MTCNN, on the same images.

    python benchmarks/align_throughput.py [--images N] [--rounds 2] [--threads 2]

Per dataset (CelebA's 178x218 crops and UTKFace's 200x200 chips in ../shared/data or
$FACEGAN_DATA) it takes every image (or N evenly spaced over the sorted file list, where
`--images N` is given; fewer images weigh the command's 2 s start-up more) and runs, alternating,
for `--rounds` rounds, each in a fresh process with torch on `--threads` threads:

- bare MTCNN: `facenet_pytorch.MTCNN()` with its defaults, `detect` on batches of 32 images
  that were decoded before the clock started (the detector's speed alone);
- `facegan align SRC DST` as a user runs it: the command's start-up, decoding, detection,
  alignment, writing every face and the manifest, timed from launch to exit.

- with `--cache`, also `facegan data cache --dataset NAME` (the aligned-face cache training
  reads) end to end the same way, at the same face fraction, 64 px.

It prints the median images/s of each, the ratio (facegan / bare), and the share of images each
found a face in with score >= 0.9 (for facegan: manifest rows with status "aligned" at its default
min_score 0.9; for the cache: faces cached of the dataset's images). The CPU is named (lscpu)
beside the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"celeba": "celeba/img_align_celeba", "utkface": "utkface/crop_part1"}
# What `facegan align --dataset NAME` uses for these crops (data_prep.datasets.registry).
FACE_SIZES = {"celeba": 0.3, "utkface": 0.3}


def cpu_model_name() -> str:
    sys.path.insert(0, str(REPO))
    from engine.device import cpu_model_name as name

    return name()


def default_data_root() -> Path:
    return Path(os.environ.get("FACEGAN_DATA", REPO.parent / "shared" / "data")).resolve()


def pick(folder: Path, n: int) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if n <= 0 or n >= len(files):
        return files
    if n == 1:
        return files[:1]
    step = (len(files) - 1) / (n - 1)
    return [files[round(k * step)] for k in range(n)]


def bare_worker(files: list[str], threads: int, batch: int) -> dict:
    """Runs in its own process: decode everything, then time MTCNN's detect alone."""
    import numpy as np
    import torch
    from facenet_pytorch import MTCNN
    from PIL import Image

    torch.set_num_threads(threads)
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    mtcnn = MTCNN(device="cpu")
    mtcnn.detect(images[:2])  # warm-up: weights in cache, oneDNN primitives made
    found = 0
    start = time.perf_counter()
    for k in range(0, len(images), batch):
        boxes, probs = mtcnn.detect(images[k:k + batch])
        found += sum(p is not None and p[0] is not None and float(np.max(p)) >= 0.9 for p in probs)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "found": int(found), "images": len(images)}


def run_bare(files: list[Path], threads: int, batch: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r); from align_throughput import bare_worker; "
            "print(json.dumps(bare_worker(json.load(sys.stdin), %d, %d)))") % (str(Path(__file__).parent), threads, batch)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps([str(f) for f in files]), capture_output=True,
                         text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def facegan_command(threads: int) -> tuple[list[str], dict]:
    """The `facegan` command of this interpreter and the environment that gives it `threads`."""
    facegan = Path(sys.executable).with_name("facegan")
    command = [str(facegan)] if facegan.exists() else [sys.executable, "-m", "transfer.cli"]
    return command, {**os.environ, "OMP_NUM_THREADS": str(threads), "FACEGAN_THREADS": str(threads)}


def run_facegan(src: Path, dst: Path, threads: int, extra: list[str]) -> dict:
    command, env = facegan_command(threads)
    start = time.perf_counter()
    subprocess.run([*command, "align", str(src), str(dst), "--quiet", *extra], check=True, env=env, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    summary = json.loads((dst / "summary.json").read_text())
    return {"seconds": seconds, "found": int(summary["aligned"]), "images": int(summary["inputs"])}


def run_cache(name: str, root: Path, dst: Path, threads: int, face_fraction: float) -> dict:
    """`facegan data cache --dataset NAME` timed from launch to exit; faces cached and skipped."""
    import re

    command, env = facegan_command(threads)
    start = time.perf_counter()
    out = subprocess.run([*command, "data", "cache", str(dst), "--dataset", name, "--root", str(root / name),
                          "--size", "64", "--face-fraction", str(face_fraction), "--no-progress"],
                         check=True, env=env, cwd=REPO, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    summary = re.search(r": (\d+) faces at .* skipped (\d+)", out)
    if summary is None:
        raise SystemExit(f"facegan data cache printed no summary:\n{out}")
    cached, skipped = int(summary[1]), int(summary[2])
    return {"seconds": seconds, "found": cached, "images": cached + skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding celeba/ and utkface/")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--images", type=int, default=0, help="images per dataset, evenly spaced; 0: all of them (the default: 4,560 CelebA, 7,224 UTKFace; about 4 minutes a round)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="bare MTCNN's batch (default 32)")
    parser.add_argument("--cache", action="store_true",
                        help="also time `facegan data cache --dataset NAME` (every image of the dataset; not with --images)")
    parser.add_argument("--facegan-args", default="",
                        help="options for `facegan align` (default: --face-fraction of the dataset, as --dataset would use)")
    args = parser.parse_args()
    if args.cache and args.images:
        parser.error("--cache caches the whole dataset: leave --images out")
    root = args.data_root or default_data_root()
    print(f"CPU: {cpu_model_name()}; {args.threads} thread(s); {args.images or 'all'} images per dataset; {args.rounds} rounds")
    print()
    cache_head = (" data cache images/s | ratio | cached |", "---|---|---|") if args.cache else ("", "")
    print("| dataset | bare MTCNN images/s | facegan align images/s | ratio | bare found (>= 0.9) | facegan aligned |"
          + cache_head[0])
    print("|---|---|---|---|---|---|" + cache_head[1])
    results = {}
    for name in args.datasets:
        folder = root / DATASETS[name]
        if not folder.is_dir():
            print(f"| {name} | missing: {folder} | | | | |")
            continue
        files = pick(folder, args.images)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            for f in files:
                (src / f.name).symlink_to(f)
            bare, ours, caches = [], [], []
            for r in range(args.rounds):
                bare.append(run_bare(files, args.threads, args.batch))
                extra = args.facegan_args.split() or ["--face-fraction", str(FACE_SIZES[name])]
                ours.append(run_facegan(src, Path(tmp) / f"dst{r}", args.threads, extra))
                if args.cache:
                    caches.append(run_cache(name, root, Path(tmp) / f"cache{r}", args.threads, FACE_SIZES[name]))
        bare_rate = statistics.median(b["images"] / b["seconds"] for b in bare)
        our_rate = statistics.median(o["images"] / o["seconds"] for o in ours)
        n = len(files)
        results[name] = {"bare": bare, "facegan": ours, **({"cache": caches} if caches else {})}
        cache_cells = ""
        if caches:
            cache_rate = statistics.median(c["images"] / c["seconds"] for c in caches)
            c = caches[0]
            cache_cells = (f" {cache_rate:.1f} | {cache_rate / bare_rate:.2f}x | "
                           f"{c['found']}/{c['images']} ({100 * c['found'] / c['images']:.1f}%) |")
        print(f"| {name} | {bare_rate:.1f} | {our_rate:.1f} | {our_rate / bare_rate:.2f}x | "
              f"{bare[0]['found']}/{n} ({100 * bare[0]['found'] / n:.1f}%) | "
              f"{ours[0]['found']}/{n} ({100 * ours[0]['found'] / n:.1f}%) |" + cache_cells, flush=True)
    print()
    print("rounds:", json.dumps({k: {e: [round(x["images"] / x["seconds"], 1) for x in v[e]] for e in v}
                                 for k, v in results.items()}))


if __name__ == "__main__":
    main()
