"""`facegan export` of a face generator: latent vectors in, faces in [-1, 1] out, in ONNX.

The file's metadata says how to draw its input (latent size and distribution) and what the
faces are (size, channels, value range, the alignment template of the training faces).
"""
from __future__ import annotations

from pathlib import Path

import torch

from data_prep.align.templates import template_metadata
from engine.onnx_export import ClampedImages, ExportCheck, base_metadata, export_onnx
from gan.generators.inference import load_generator_step
from gan.generators.models.latent import sample_latent

__all__ = ["export_generator"]


def export_generator(checkpoint: str | Path, out: str | Path, batch: int = 8, seed: int = 0, use_ema: bool = True,
                     time_seconds: float = 0.0) -> ExportCheck:
    """Write the generator of a `gan train` checkpoint to `out` (ONNX), checked on `batch`
    latents drawn with `seed` from the training distribution."""
    step, state = load_generator_step(checkpoint, use_ema=use_ema)
    config = step.config
    data = (state.get("run_config") or {}).get("data") or {}
    rng = torch.Generator().manual_seed(seed)
    latents = sample_latent(batch, config.latent_dim, config.latent_distribution, generator=rng)
    used_ema = use_ema and (state.get("ema") or {}).get("generator") is not None
    metadata = {
        **base_metadata("gan-generator", checkpoint, int(state.get("global_step", 0)), used_ema),
        "model": config.model,
        "input": "latent",
        "latent_dim": config.latent_dim,
        "latent_distribution": config.latent_distribution,
        "latent_range": [-1.0, 1.0] if config.latent_distribution == "uniform" else None,
        "output": "images",
        "image_size": config.image_size,
        "channels": config.channels,
        "value_range": [-1.0, 1.0],
        "to_uint8": "round((x + 1) * 127.5), clamped to [0, 255]",
        "template": template_metadata(data.get("template", "thesis"), config.image_size)
                    if data.get("align", True) else None,
    }
    return export_onnx(ClampedImages(step.generator), latents, out, ["images"], metadata, input_name="latent",
                       time_seconds=time_seconds)
