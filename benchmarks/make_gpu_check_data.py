"""Make the data `benchmarks/gpu_check.py` takes to a GPU machine: aligned 64 px faces and raw
photos of ../shared/data in one file, well under the 64 MiB a device run may carry.

    python benchmarks/make_gpu_check_data.py [--faces 3000] [--photos 256] [--out benchmarks/data/gpu_check.npz]

faces: (N, 64, 64, 3) uint8, CelebA crops aligned by facegan's aligner (thesis template);
photos: the encoded bytes of raw CelebA and UTKFace images, concatenated, with their offsets.
The file holds dataset images: it stays out of git (benchmarks/data/ is ignored) and is only
for measuring on a lent machine.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get("FACEGAN_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--faces", type=int, default=3000)
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "data" / "gpu_check.npz")
    args = parser.parse_args()
    from data_prep.align.aligner import AlignConfig, FaceAligner
    from data_prep.images import load_rgb

    celeba = sorted((args.data_root / "celeba" / "img_align_celeba").iterdir())
    utkface = sorted((args.data_root / "utkface" / "crop_part1").iterdir())
    aligner = FaceAligner(AlignConfig(output_size=64, face_fraction=0.3))
    faces = []
    for start in range(0, len(celeba), 64):
        for result in aligner.align_batch([load_rgb(p) for p in celeba[start:start + 64]]):
            if result.face is not None:
                faces.append(result.face)
        if len(faces) >= args.faces:
            break
    chosen = celeba[-args.photos // 2:] + utkface[:args.photos - args.photos // 2]
    blobs = [p.read_bytes() for p in chosen]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, faces=np.stack(faces[:args.faces]),
                        photos=np.frombuffer(b"".join(blobs), dtype=np.uint8), photo_offsets=offsets)
    print(f"wrote {args.out}: {min(len(faces), args.faces)} faces, {len(blobs)} photos, "
          f"{args.out.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
