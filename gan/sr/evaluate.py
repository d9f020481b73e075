"""`facegan sr eval`: how much better than bicubic a super-resolution checkpoint is.

Protocol (every choice is also written into the JSON and Markdown reports):

- HR faces: a dataset split aligned through the aligned-face cache at the model's HR size with the
  checkpoint's training template (as in training), or a folder of aligned faces centre-cropped and
  resized (antialiased bicubic) to the HR size. At most `num` faces, evenly spaced.
- LR inputs: the checkpoint's degradation (data_prep/degrade.py) with per-image seeds
  (`eval_seeds`: a function of the degradation seed and the face's position), or with
  `degradation="clean"` plain antialiased bicubic downsampling. SR and bicubic see the same LR.
- Bicubic baseline: torch's bicubic upsampling (a = -0.75, align_corners=False) of the LR image.
- Both outputs are clamped and rounded to uint8 before any metric, as saved images would be.
- PSNR and SSIM (gan/metrics/image.py, BasicSR conventions) on RGB and on the BT.601 Y
  channel, after removing `crop_border` pixels from every side (default: the scale factor, as
  in SR papers), averaged over faces.
- LPIPS v0.1 (alex by default) on the uncropped images in [-1, 1], when the backbone weights are
  present (gan/metrics/lpips_loader.py); otherwise skipped with the reason.
- Identity similarity: cosine similarity of dlib face embeddings (gan/metrics/face_embedding.py)
  between each output and its HR face, with the landmark box of the faces' template; needs the
  [metrics] extra, otherwise skipped with the reason.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_prep.selection import evenly_spaced
from engine.checkpoint import atomic_write_text
from engine.errors import FaceganError

__all__ = ["evaluate_sr", "metric_table", "METRICS_HIGHER_IS_BETTER"]

log = logging.getLogger(__name__)

METRICS_HIGHER_IS_BETTER = {
    "psnr_rgb": True, "psnr_y": True, "ssim_rgb": True, "ssim_y": True, "lpips": False, "identity": True,
}


def _dataset_faces(name: str, root: str, split: str, template: str, align: bool, hr_size: int, num: int,
                   out_dir: Path, cache_dir: Path | None, progress: bool,
                   split_settings: dict | None = None) -> tuple[torch.Tensor, dict, list]:
    from data_prep.sources import SourceConfig, aligned_cache, open_source

    tag = template if align else "unaligned"
    split_settings = split_settings or {}
    cache_dir = cache_dir or out_dir / "cache" / f"{name}-{split}-{hr_size}-{tag}"
    config = SourceConfig(source=name, root=root, align=align, template=template, cache_dir=str(cache_dir),
                          **split_settings)
    dataset = open_source(config, out_dir, min_image_size=hr_size)
    if split != "all":
        dataset = dataset.subset(split=split)
        if len(dataset) == 0:
            raise FaceganError(f"{name}: no images in split {split!r}; choose another --split (or all)")
    # Only the faces that will be measured are aligned (a full dataset would take much longer).
    keep = evenly_spaced(len(dataset), max(num, 1) + max(8, num // 20))  # a margin for faces the aligner skips
    dataset = dataset.with_records([dataset.records[i] for i in keep])
    cache = aligned_cache(dataset, config, hr_size, out_dir, progress=progress)
    rows = evenly_spaced(len(cache), num)
    skipped = [{"source": s.source, "reason": s.reason} for s in cache.skipped]
    description = {"dataset": name, "root": root, "split": split, "align": align, "template": template,
                   "faces": len(rows), "selection": "evenly spaced over the split",
                   "split_rule": ("the training run's identity-disjoint split " + json.dumps(split_settings))
                   if split_settings else "the dataset's own split"}
    return cache.get_batch(rows), description, skipped


def _folder_faces(folder: Path, hr_size: int, num: int) -> tuple[torch.Tensor, dict, list]:
    from data_prep.images import ImageLoadError, list_images, load_rgb
    from gan.sr.inference import lr_from_image

    if not folder.is_dir():
        raise FaceganError(f"evaluation folder not found: {folder}")
    paths = list_images(folder)
    faces, skipped = [], []
    for path in paths:
        try:
            faces.append(lr_from_image(load_rgb(path), hr_size))
        except ImageLoadError as exc:
            skipped.append({"source": str(path), "reason": exc.reason, "detail": exc.detail})
    if not faces:
        raise FaceganError(f"no readable images below {folder}")
    chosen = evenly_spaced(len(faces), num)
    description = {"folder": str(folder), "faces": len(chosen), "selection": "evenly spaced over the sorted files",
                   "resize": "centre square crop, antialiased bicubic to the HR size (faces assumed aligned)"}
    return torch.stack([faces[i] for i in chosen]), description, skipped


def _summary(sr_values: np.ndarray, bicubic_values: np.ndarray, higher_is_better: bool) -> dict[str, float]:
    sr_values = np.asarray(sr_values, dtype=np.float64)
    bicubic_values = np.asarray(bicubic_values, dtype=np.float64)
    finite = np.isfinite(sr_values) & np.isfinite(bicubic_values)  # identical images give PSNR inf
    return {
        "sr": float(sr_values[finite].mean()),
        "bicubic": float(bicubic_values[finite].mean()),
        "sr_std": float(sr_values[finite].std()),
        "bicubic_std": float(bicubic_values[finite].std()),
        "gain": float(sr_values[finite].mean() - bicubic_values[finite].mean()),
        "higher_is_better": higher_is_better,
        "images": int(finite.sum()),
        "sr_better_share": float(np.mean((sr_values[finite] > bicubic_values[finite]) == higher_is_better)),
    }


def metric_table(metrics: dict[str, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the SR-vs-bicubic table, for Markdown reports and the demo."""
    header = ["metric", "SR", "bicubic", "SR - bicubic", "faces where SR is better"]
    rows = []
    for name, value in metrics.items():
        digits = 2 if name.startswith("psnr") else 4
        arrow = "higher is better" if value["higher_is_better"] else "lower is better"
        rows.append([f"{name} ({arrow})", f"{value['sr']:.{digits}f} ± {value['sr_std']:.{digits}f}",
                     f"{value['bicubic']:.{digits}f} ± {value['bicubic_std']:.{digits}f}", f"{value['gain']:+.{digits}f}",
                     f"{100 * value['sr_better_share']:.0f}%"])
    return header, rows


def _markdown(result: dict[str, Any]) -> str:
    header, rows = metric_table(result["metrics"])
    lines = [f"# SR evaluation: {result['protocol']['checkpoint']}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines.append("Mean ± standard deviation over faces.")
    if result["skipped_metrics"]:
        lines += ["", "Skipped metrics:"]
        lines += [f"- {name}: {reason.splitlines()[0]}" for name, reason in result["skipped_metrics"].items()]
    lines += ["", "## Protocol", ""]
    for key, value in result["protocol"].items():
        lines.append(f"- {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    lines += ["", f"![LR | bicubic | SR | HR]({Path(result['files']['strips']).name})", ""]
    return "\n".join(lines)


@torch.no_grad()
def evaluate_sr(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    root: str = "",
    folder: str | Path | None = None,
    split: str = "test",
    num: int = 500,
    degradation: str = "checkpoint",
    crop_border: int | None = None,
    lpips: bool = True,
    lpips_net: str = "alex",
    identity: bool = True,
    template: str | None = None,
    align: bool = True,
    cache_dir: str | Path | None = None,
    strips: int = 8,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    progress: bool = True,
    hr_faces: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Evaluate an SR checkpoint (module docstring); returns the result written to OUT/sr_eval.json.

    `hr_faces` ((N, 3, S, S) uint8) replaces the dataset / folder, for callers that hold faces already.
    """
    from engine.logging import save_image_grid
    from data_prep.degrade import Degradation, DegradationConfig, bicubic_upsample, eval_seeds
    from data_prep.transforms import to_unit_range
    from gan.metrics.batch import to_uint8
    from gan.metrics.image import psnr, ssim
    from gan.sr.inference import load_sr_checkpoint, make_strips, super_resolve

    if sum(x is not None for x in (dataset, folder, hr_faces)) != 1:
        raise FaceganError("evaluate_sr needs exactly one of dataset, folder or hr_faces")
    if num < 1:
        raise FaceganError(f"--num must be >= 1, got {num}")
    if degradation not in ("checkpoint", "clean"):
        raise FaceganError(f"degradation must be 'checkpoint' or 'clean', got {degradation!r}")
    device = torch.device(device)
    loaded = load_sr_checkpoint(checkpoint, use_ema=use_ema, device=device)
    cfg = loaded.config
    scale, hr_size = cfg.model.scale, cfg.model.output_size
    train_data = loaded.run_config.get("data", {})
    template = template or train_data.get("template", "thesis")
    if out_dir is None:
        tag = f"eval-{split}" if dataset is not None else f"eval-{Path(folder).name}" if folder is not None else "eval"
        out_dir = Path(checkpoint).resolve().parent.parent / tag
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    if hr_faces is not None:
        hr = hr_faces
        data_description: dict[str, Any] = {"faces": len(hr), "selection": "given by the caller"}
        unreadable: list = []
    elif dataset is not None:
        # The training run's people split, when it made one: evaluating on the dataset's own test
        # partition could then measure faces of people the model trained on.
        split_settings = None
        if train_data.get("source") == dataset and float(train_data.get("test_fraction") or 0) > 0:
            split_settings = {k: train_data[k] for k in ("test_fraction", "val_fraction", "split_seed") if k in train_data}
        hr, data_description, unreadable = _dataset_faces(dataset, root, split, template, align, hr_size, num, out_dir,
                                                          Path(cache_dir) if cache_dir else None, progress,
                                                          split_settings)
    else:
        hr, data_description, unreadable = _folder_faces(Path(folder), hr_size, num)
    if hr.dtype != torch.uint8 or hr.dim() != 4 or tuple(hr.shape[1:]) != (3, hr_size, hr_size):
        raise FaceganError(f"HR faces must be (N, 3, {hr_size}, {hr_size}) uint8, got {tuple(hr.shape)} {hr.dtype}")

    degradation_config = cfg.degradation if degradation == "checkpoint" else DegradationConfig(seed=cfg.degradation.seed)
    degrade = Degradation(degradation_config, scale)
    lr = torch.cat([degrade.degrade_uint8(chunk, eval_seeds(degradation_config, range(start, start + len(chunk))))
                    for start, chunk in zip(range(0, len(hr), batch_size), hr.split(batch_size))])
    lr_unit = to_unit_range(lr)
    sr = to_uint8(super_resolve(loaded.generator, lr_unit, batch_size).cpu())
    bicubic = to_uint8(bicubic_upsample(lr_unit, scale).clamp(-1, 1))

    border = scale if crop_border is None else int(crop_border)
    metrics: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    for name, y_channel in (("rgb", False), ("y", True)):
        metrics[f"psnr_{name}"] = _summary(psnr(sr, hr, crop_border=border, y_channel=y_channel),
                                           psnr(bicubic, hr, crop_border=border, y_channel=y_channel), True)
    if hr_size - 2 * border >= 11:
        for name, y_channel in (("rgb", False), ("y", True)):
            metrics[f"ssim_{name}"] = _summary(ssim(sr, hr, crop_border=border, y_channel=y_channel),
                                               ssim(bicubic, hr, crop_border=border, y_channel=y_channel), True)
    else:
        skipped["ssim"] = f"the {hr_size} px faces minus a {border} px border are smaller than SSIM's 11 px window"

    protocol_lpips = None
    if lpips:
        from gan.metrics.lpips_loader import LPIPSMetric, LPIPSWeightsError, lpips_unavailable_reason

        reason = lpips_unavailable_reason(lpips_net)
        if reason is None:
            try:
                metric = LPIPSMetric(lpips_net, device=device)
                metrics["lpips"] = _summary(metric(sr, hr).numpy(), metric(bicubic, hr).numpy(), False)
                protocol_lpips = metric.protocol()
            except LPIPSWeightsError as exc:
                skipped["lpips"] = str(exc)
        else:
            skipped["lpips"] = reason
    else:
        skipped["lpips"] = "not requested (--no-lpips)"

    protocol_identity = None
    if identity:
        from gan.metrics.face_embedding import FaceEmbedder, FaceEmbeddingUnavailable, identity_similarity

        try:
            embedder = FaceEmbedder(template=template)
        except FaceEmbeddingUnavailable as exc:
            skipped["identity"] = str(exc)
        else:
            metrics["identity"] = _summary(identity_similarity(sr, hr, embedder), identity_similarity(bicubic, hr, embedder), True)
            protocol_identity = embedder.protocol()
    else:
        skipped["identity"] = "not requested (--no-identity)"

    strips_path = out_dir / "strips.png"
    count = min(strips, len(hr))
    picks = evenly_spaced(len(hr), count)
    strip_images = make_strips(lr_unit[picks], to_unit_range(bicubic[picks]), to_unit_range(sr[picks]), to_unit_range(hr[picks]))
    save_image_grid(strip_images, strips_path, nrow=4)

    protocol = {
        "checkpoint": str(Path(checkpoint)),
        "checkpoint_step": loaded.step,
        "weights": "ema" if loaded.ema else "raw",
        "scale": scale,
        "lr_size": cfg.model.input_size,
        "hr_size": hr_size,
        "data": data_description,
        "degradation": {"source": degradation, **degrade.describe(), "seeds": "eval_seeds(seed, face index)"},
        "bicubic_baseline": "torch interpolate bicubic (a=-0.75), align_corners=False, clamped and rounded to uint8",
        "crop_border": border,
        "y_channel": "ITU-R BT.601 luma, Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1])",
        "psnr_ssim": "uint8 images on 0..255, BasicSR conventions (gan/metrics/image.py)",
        "lpips": protocol_lpips,
        "identity": protocol_identity,
    }
    files = {"json": str(out_dir / "sr_eval.json"), "markdown": str(out_dir / "sr_eval.md"), "strips": str(strips_path)}
    result = {"protocol": protocol, "metrics": metrics, "skipped_metrics": skipped, "unreadable_inputs": unreadable,
              "files": files}
    atomic_write_text(files["json"], json.dumps(result, indent=2, default=str))
    atomic_write_text(files["markdown"], _markdown(result))
    return result
