"""How much faster training reads faces from the aligned-face cache than from the JPEGs.

Builds a cache (centre-crop + resize, no alignment, so both paths do the same image work)
from N real CelebA JPEGs, then measures in the same run, after one untimed warm-up pass over
each so that both read from the page cache:

- JPEG: PIL decode + centre-crop + antialiased resize to the cache size, in a plain loop and
  through a DataLoader;
- cache: `AlignedFaceCache` through the same DataLoader, and `get_batch` on random batches.

Every row is reported as images/s and as a ratio to the JPEG loop measured in this run.
Without real data ($FACEGAN_DATA or ../shared/data), synthetic faces written as 178x218 JPEGs
stand in, and the output says so.

    python benchmarks/cache_throughput.py --n 2000 --size 64 --threads 1
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data_prep.cache import build_cache, resize_square
from data_prep.datasets.base import FaceDataset
from data_prep.datasets.record import SampleRecord
from data_prep.datasets.schema import LabelSchema
from data_prep.images import load_rgb
from engine.device import configure_threads

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def find_jpegs(n: int) -> tuple[list[Path], str]:
    root = Path(os.environ.get("FACEGAN_DATA", PROJECT_ROOT.parent / "shared" / "data"))
    folder = root / "celeba" / "img_align_celeba"
    paths = sorted(folder.glob("*.jpg"))[:n] if folder.is_dir() else []
    if not paths:
        return [], f"real CelebA JPEGs not found under {folder}"
    return paths, f"{len(paths)} real CelebA JPEGs from {folder}"


def write_synthetic_jpegs(n: int, folder: Path) -> list[Path]:
    from data_prep.synthetic import render_faces

    faces = render_faces(n, seed=0, domain="wild", size=218).images
    paths = []
    for i, face in enumerate(faces):
        path = folder / f"synthetic_{i:06d}.jpg"
        # 178x218 like CelebA's aligned JPEGs, so that decode work is comparable in size.
        Image.fromarray(face[:, 20:198]).save(path, quality=90)
        paths.append(path)
    return paths


class JpegFaces(torch.utils.data.Dataset):
    """The no-cache baseline: decode and resize on every access."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(resize_square(load_rgb(self.paths[i]), self.size)).permute(2, 0, 1)


def images_per_second(run: Callable[[], int], repeats: int) -> float:
    run()  # warm-up: page cache, worker start-up code paths, allocator
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of JPEGs (default 2000)")
    parser.add_argument("--size", type=int, default=64, help="cached face side in pixels (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per path; the best is kept (default 3)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="facegan-cache-bench-") as tmp:
        tmp = Path(tmp)
        paths, source = find_jpegs(args.n)
        if not paths:
            (tmp / "jpeg").mkdir()
            paths = write_synthetic_jpegs(args.n, tmp / "jpeg")
            source = (f"NOTE: {source}; using {len(paths)} SYNTHETIC faces written as 178x218 JPEG instead "
                      "(real photos decode slower, so the real ratio is likely higher)")
        with Image.open(paths[0]) as first:
            shape = f"{first.width}x{first.height}"
        dataset = FaceDataset("bench", [SampleRecord(p) for p in paths], LabelSchema())
        start = time.perf_counter()
        cache = build_cache(dataset, tmp / "cache", args.size, progress=False)
        build_s = time.perf_counter() - start
        n = len(cache)
        rng = np.random.default_rng(0)

        def jpeg_loop() -> int:
            for p in paths:
                resize_square(load_rgb(p), args.size)
            return len(paths)

        def loader_pass(data) -> Callable[[], int]:
            def run() -> int:
                loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                    generator=torch.Generator().manual_seed(0))
                count = 0
                for batch in loader:
                    count += len(batch["image"] if isinstance(batch, dict) else batch)
                return count
            return run

        def get_batch_pass() -> int:
            order = rng.permutation(n)
            for i in range(0, n, args.batch_size):
                cache.get_batch(order[i:i + args.batch_size])
            return n

        rows = [
            ("JPEG decode + resize, loop", images_per_second(jpeg_loop, args.repeats)),
            (f"JPEG decode + resize, DataLoader(workers={args.workers})",
             images_per_second(loader_pass(JpegFaces(paths, args.size)), args.repeats)),
            (f"cache __getitem__, DataLoader(workers={args.workers})",
             images_per_second(loader_pass(cache), args.repeats)),
            (f"cache get_batch({args.batch_size}), random order", images_per_second(get_batch_pass, args.repeats)),
        ]

    print(f"source: {source} ({shape}) -> {args.size}x{args.size}; threads={args.threads}, "
          f"batch={args.batch_size}, best of {args.repeats}")
    print(f"cache build (decode + resize + write, {n} images): {build_s:.1f} s ({n / build_s:.0f} images/s)")
    baseline = rows[0][1]
    width = max(len(name) for name, _ in rows)
    print(f"{'path':<{width}}  {'images/s':>10}  {'vs JPEG loop':>12}")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>10.0f}  {rate / baseline:>11.1f}x")
    print(f"ratio cache DataLoader / JPEG DataLoader: {rows[2][1] / rows[1][1]:.1f}x; "
          f"get_batch / JPEG loop: {rows[3][1] / baseline:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
