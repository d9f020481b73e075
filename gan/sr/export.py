"""`facegan export` of a super-resolution generator: aligned LR faces in, SR faces out, in ONNX.

The metadata says how the LR input is made (input size, value range, template, the
degradation it was trained on) and what comes out (output size, scale).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from data_prep.align.templates import template_metadata
from data_prep.degrade import bicubic_downsample
from data_prep.synthetic import render_faces
from data_prep.transforms import to_unit_range
from engine.onnx_export import ClampedImages, ExportCheck, base_metadata, export_onnx
from gan.sr.inference import load_sr_checkpoint

__all__ = ["export_sr", "sample_lr_faces"]


def sample_lr_faces(n: int, output_size: int, scale: int, seed: int = 0) -> torch.Tensor:
    """`n` built-in synthetic faces at `output_size`, bicubic-downsampled by `scale`, in [-1, 1]:
    inputs that look like what the generator was trained on."""
    faces = render_faces(n, seed=seed, size=output_size).image_tensor().float()
    return to_unit_range(bicubic_downsample(faces, scale).clamp(0, 255).round())


def export_sr(checkpoint: str | Path, out: str | Path, batch: int = 8, seed: int = 0, use_ema: bool = True,
              time_seconds: float = 0.0) -> ExportCheck:
    """Write the generator of an `sr train` checkpoint to `out` (ONNX), checked on `batch`
    synthetic LR faces."""
    loaded = load_sr_checkpoint(checkpoint, use_ema=use_ema)
    data = loaded.run_config.get("data") or {}
    metadata = {
        **base_metadata("sr-generator", checkpoint, loaded.step, loaded.ema),
        "input": "images",
        "input_size": loaded.input_size,
        "output": "sr_images",
        "output_size": loaded.output_size,
        "scale": loaded.scale,
        "channels": 3,
        "value_range": [-1.0, 1.0],
        "preprocessing": "RGB uint8 face aligned at output_size, downsampled to input_size, then x / 127.5 - 1",
        "degradation": asdict(loaded.config.degradation),
        "template": template_metadata(data.get("template", "thesis"), loaded.output_size)
                    if data.get("align", True) else None,
    }
    inputs = sample_lr_faces(batch, loaded.output_size, loaded.scale, seed)
    return export_onnx(ClampedImages(loaded.generator), inputs, out, ["sr_images"], metadata, time_seconds=time_seconds)
