"""`facegan export`: whichever model a checkpoint holds, to ONNX.

The checkpoint's own config says which family wrote it; that family's `export` module does the
rest (gan.generators.export, gan.sr.export, attributes.export), and engine.onnx_export holds
what they share. It lives here because only transfer may import both gan and attributes.
"""
from __future__ import annotations

from pathlib import Path

from engine.checkpoint import CheckpointError, load_checkpoint
from engine.onnx_export import ExportCheck, require_onnx

__all__ = ["FAMILIES", "checkpoint_family", "export_checkpoint"]

FAMILIES = ("gan-generator", "sr-generator", "attribute-model")


def checkpoint_family(checkpoint: str | Path) -> str:
    """Which of `FAMILIES` trained the checkpoint."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    run = state.get("run_config") or {}
    if "gan" in run:
        return "gan-generator"
    if "sr" in run:
        return "sr-generator"
    if "schemas" in run and "model" in run:
        return "attribute-model"
    raise CheckpointError(f"{checkpoint} is not a checkpoint of `facegan gan train`, `sr train` or `attributes train` "
                          "(no gan, sr or attribute-model config inside), so there is nothing to export")


def export_checkpoint(checkpoint: str | Path, out: str | Path, batch: int = 8, seed: int = 0, use_ema: bool = True,
                      time_seconds: float = 0.0) -> tuple[str, ExportCheck]:
    """Export the model of `checkpoint` to `out`; returns its family and the check against PyTorch."""
    require_onnx()  # before any loading: a missing extra is the first thing to hear about
    family = checkpoint_family(checkpoint)
    if family == "gan-generator":
        from gan.generators.export import export_generator as export
    elif family == "sr-generator":
        from gan.sr.export import export_sr as export
    else:
        from attributes.export import export_attributes as export
    return family, export(checkpoint, out, batch=batch, seed=seed, use_ema=use_ema, time_seconds=time_seconds)
