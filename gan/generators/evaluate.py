"""How close generated faces are to real ones: FD-face, FID and KID against a reference set.

FAKE is a GAN checkpoint (N faces are sampled from it) or a folder of generated images. The
reference faces are read from a dataset (or folder) and aligned exactly as for training (same
template and size, through the aligned-face cache). Every number comes with its protocol:
feature extractor and weights, resize, sample counts and reference split.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.checkpoint import atomic_write_text
from engine.errors import FaceganError
from gan.generators.config import GANDataConfig
from gan.generators.data import build_gan_dataset
from gan.generators.inference import generated_batches, load_generator_step

__all__ = ["GENERATOR_METRICS", "evaluate_generator"]

GENERATOR_METRICS = ("fd-face", "fid", "kid")


def evaluate_generator(fake: str | Path, real: str, root: str = "", split: str = "test",
                       metrics: list[str] | tuple[str, ...] = ("fd-face",), num: int = 1000,
                       image_size: int | None = None, template: str = "thesis", cache_dir: str | Path | None = None,
                       out: str | Path | None = None, seed: int = 0, use_ema: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Compare the faces of `fake` with `num` real faces of `real`; returns {"generated": what
    was measured, "results": {metric: {fd, kid_mean, kid_std, num_fake, num_real, protocol}}}
    and writes it as JSON to `out` when given."""
    from gan.metrics.fid import compute_fid_kid

    wanted = [m.strip().lower() for m in metrics if m.strip()]
    unknown = set(wanted) - set(GENERATOR_METRICS)
    if unknown or not wanted:
        raise FaceganError(f"--metrics takes fd-face, fid and/or kid; got {','.join(metrics)!r}")
    if num < 2:
        raise FaceganError("--num must be at least 2 (a covariance needs two samples)")
    fake = Path(fake)
    if fake.is_file():
        step, _ = load_generator_step(fake, use_ema=use_ema, device=device)
        image_size = step.config.image_size
        fake_faces = lambda: generated_batches(step, num, seed, device)  # noqa: E731 (fresh per metric)
        fake_what = f"{num} samples of {fake} ({'EMA' if use_ema else 'raw'} generator, seed {seed})"
    elif fake.is_dir():
        if not image_size:
            raise FaceganError("FAKE is a folder: give --image-size, the side of the generated faces")
        fake_faces = lambda: fake  # noqa: E731
        fake_what = f"images in {fake}"
    else:
        raise FaceganError(f"{fake} is neither a checkpoint file nor a folder")

    if cache_dir is None:  # beside the run that made the checkpoint, else in the working folder
        base = fake.resolve().parent.parent if fake.is_file() else Path("runs")
        cache_dir = base / "eval-cache" / f"{real}-{split}-{image_size}"
    cache_dir = Path(cache_dir)
    data = GANDataConfig(source=real, root=root, split=split, template=template, flip=False, cache_dir=str(cache_dir))
    reference = build_gan_dataset(data, image_size, cache_dir.parent)
    count = min(num, len(reference))
    real_faces = [reference.get_batch(list(range(start, min(start + 100, count)))) for start in range(0, count, 100)]
    reference_what = f"{real} split={split}, {count} faces aligned with template {template} at {image_size} px"

    features = cache_dir.parent / f"{cache_dir.name}-features"  # the reference's features: extracted once
    results = {}
    if "fd-face" in wanted:
        from gan.metrics.face_embedding import FaceEmbedder

        results["fd-face"] = compute_fid_kid(real_faces, fake_faces(), FaceEmbedder(template=template), kid=False,
                                             seed=seed, reference=reference_what, device=device,
                                             real_cache_dir=features)
    if "fid" in wanted or "kid" in wanted:
        results["fid"] = compute_fid_kid(real_faces, fake_faces(), None, kid="kid" in wanted, seed=seed,
                                         reference=reference_what, device=device, real_cache_dir=features)
    summary = {"generated": fake_what, "results": results}
    if out:
        atomic_write_text(out, json.dumps(summary, indent=2, default=str))
    return summary
