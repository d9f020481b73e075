"""Does the aligner put the same face in the same place however the photo is framed?

For N real faces (half CelebA, half UTKFace, evenly spaced over the sorted file lists), each
image is also transformed by a random similarity A (rotation up to +-`--max-angle` degrees,
scale 0.7-1.4, shift up to 10% of the size) onto a canvas padded by `--pad` of its size on
each side (zeros outside the photo). Both versions are aligned independently. Reported, in
output (template) pixels of the configured output size and as a fraction of the template's
inter-ocular distance:

- landmark disagreement: both detections mapped into the original's template frame,
  |T_o(L_o) - T_o(A^-1 L_t)| per landmark, averaged over the 5 landmarks of a face;
- warp disagreement: where the template points of one crop land in the other,
  |q - T_t A T_o^-1 q|, averaged over the 5 template points; this is what a downstream
  model sees (the same face point at two places in two crops);
- failures: how often either version was not aligned.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/align_consistency.py --limit 100
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from kornia.geometry.transform import warp_affine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_prep.align.aligner import AlignConfig, FaceAligner  # noqa: E402
from data_prep.align.similarity import apply_affine, compose_affine, invert_affine  # noqa: E402
from data_prep.images import load_rgb  # noqa: E402
from engine.device import configure_threads  # noqa: E402

SOURCES = {"celeba": "celeba/img_align_celeba", "utkface": "utkface/crop_part1"}


def default_data_root() -> Path:
    return Path(os.environ.get("FACEGAN_DATA", REPO.parent / "shared" / "data")).resolve()


def pick_files(root: Path, limit: int) -> list[Path]:
    per_source = [limit // 2 + (limit % 2), limit // 2]
    files: list[Path] = []
    for (name, rel), count in zip(SOURCES.items(), per_source):
        folder = root / rel
        if not folder.is_dir():
            print(f"{name}: not found at {folder}; skipped")
            continue
        listing = sorted(p for p in folder.iterdir() if p.is_file())
        index = np.unique(np.linspace(0, len(listing) - 1, num=min(count, len(listing))).round().astype(int))
        files += [listing[i] for i in index]
    return files


def random_similarity(rng: np.random.Generator, height: int, width: int, pad: float, max_angle: float):
    """A (2x3, original -> canvas) and the canvas size (h, w)."""
    canvas_h, canvas_w = round(height * (1 + 2 * pad)), round(width * (1 + 2 * pad))
    angle = math.radians(rng.uniform(-max_angle, max_angle))
    scale = rng.uniform(0.7, 1.4)
    shift = rng.uniform(-0.1, 0.1, size=2) * np.array([width, height])
    centre_src = np.array([(width - 1) / 2, (height - 1) / 2])
    centre_dst = np.array([(canvas_w - 1) / 2, (canvas_h - 1) / 2]) + shift
    linear = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix = np.concatenate([linear, (centre_dst - linear @ centre_src)[:, None]], axis=1)
    return matrix, (canvas_h, canvas_w), math.degrees(angle), scale


def transform_image(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()
    mat = torch.from_numpy(matrix)[None].float()
    out = warp_affine(tensor, mat, size, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.round().clamp(0, 255).byte()[0].permute(1, 2, 0).numpy()


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {
        "n": len(arr),
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "p95": float(np.quantile(arr, 0.95)),
        "max": float(arr.max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding celeba/ and utkface/")
    parser.add_argument("--limit", type=int, default=200, help="number of faces (half CelebA, half UTKFace)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random transforms")
    parser.add_argument("--max-angle", type=float, default=30.0, help="largest rotation, degrees")
    parser.add_argument("--pad", type=float, default=0.3, help="canvas padding per side, fraction of the image size")
    parser.add_argument("--template", default="thesis", help="template name or file")
    parser.add_argument("--output-size", type=int, default=128, help="output side in pixels")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per align_batch call")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default $FACEGAN_THREADS or all)")
    parser.add_argument("--face-fraction", type=float, default=0.0,
                        help="AlignConfig.face_fraction: the smallest face expected, share of the shorter side")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    threads = configure_threads(args.threads)
    root = (args.data_root or default_data_root()).resolve()
    aligner = FaceAligner(AlignConfig(template=args.template, output_size=args.output_size, device=args.device,
                                      batch_size=args.batch_size, face_fraction=args.face_fraction))
    template = aligner.template_points
    inter_ocular = float(np.linalg.norm(template[1] - template[0]))
    files = pick_files(root, args.limit)
    rng = np.random.default_rng(args.seed)
    print(f"data root {root}; {len(files)} faces; template {args.template} at {args.output_size}px "
          f"(inter-ocular {inter_ocular:.1f}px); torch threads {threads}")

    landmark_err, warp_err, angles = [], [], []
    failed_original = failed_transformed = failed_any = 0
    worst: list[tuple[float, str]] = []
    failed_names: list[str] = []
    started = time.perf_counter()
    for start in range(0, len(files), args.batch_size):
        chunk = files[start : start + args.batch_size]
        originals = [load_rgb(p) for p in chunk]
        transformed, matrices = [], []
        for image in originals:
            matrix, size, angle, _ = random_similarity(rng, *image.shape[:2], args.pad, args.max_angle)
            transformed.append(transform_image(image, matrix, size))
            matrices.append(matrix)
            angles.append(angle)
        results = aligner.align_batch(originals + transformed)
        res_o, res_t = results[: len(chunk)], results[len(chunk) :]
        for path, a, ro, rt in zip(chunk, matrices, res_o, res_t):
            ok_o, ok_t = ro.status == "aligned", rt.status == "aligned"
            failed_original += not ok_o
            failed_transformed += not ok_t
            if not (ok_o and ok_t):
                failed_any += 1
                which = [name for name, ok in (("original", ok_o), ("transformed", ok_t)) if not ok]
                failed_names.append(f"{path.name} ({' and '.join(which)})")
                continue
            a_inv = invert_affine(a)
            mapped_o = apply_affine(ro.transform, ro.landmarks)
            mapped_t = apply_affine(ro.transform, apply_affine(a_inv, rt.landmarks))
            lm = float(np.linalg.norm(mapped_o - mapped_t, axis=1).mean())
            # Template point q in crop o -> original -> canvas -> crop t.
            chain = compose_affine(rt.transform, compose_affine(a, invert_affine(ro.transform)))
            wp = float(np.linalg.norm(apply_affine(chain, template) - template, axis=1).mean())
            landmark_err.append(lm)
            warp_err.append(wp)
            worst.append((lm, path.name))
    elapsed = time.perf_counter() - started

    result = {
        "faces": len(files),
        "failed_original": failed_original,
        "failed_transformed": failed_transformed,
        "failed_either": failed_any,
        "failed": failed_names,
        "landmark_px": stats(landmark_err),
        "landmark_iod": stats([v / inter_ocular for v in landmark_err]),
        "warp_px": stats(warp_err),
        "warp_iod": stats([v / inter_ocular for v in warp_err]),
        "seconds": elapsed,
    }
    fmt = lambda s: (f"mean {s['mean']:.2f}, median {s['median']:.2f}, p95 {s['p95']:.2f}, max {s['max']:.2f}" if s.get("n") else "n/a")  # noqa: E731
    print(f"failures: original {failed_original}, transformed {failed_transformed}, either {failed_any} of {len(files)} "
          f"({100 * failed_any / max(1, len(files)):.1f}%)")
    print(f"landmark disagreement [px at {args.output_size}]: {fmt(result['landmark_px'])}")
    print(f"landmark disagreement [x inter-ocular]: {fmt(result['landmark_iod'])}")
    print(f"warp disagreement [px at {args.output_size}]: {fmt(result['warp_px'])}")
    print(f"warp disagreement [x inter-ocular]: {fmt(result['warp_iod'])}")
    if failed_names:
        print("not aligned: " + ", ".join(failed_names))
    print("worst faces: " + ", ".join(f"{name} {err:.2f}px" for err, name in sorted(worst, reverse=True)[:5]))
    print(f"{2 * len(files) / elapsed:.1f} alignments/s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
