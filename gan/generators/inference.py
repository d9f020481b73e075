"""Using a trained face generator: load it from a checkpoint, draw faces and interpolations."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from engine.checkpoint import load_checkpoint, module_weights
from engine.config import from_dict
from engine.errors import FaceganError
from gan.generators.config import GANConfig
from gan.generators.step import GANStep, build_gan_step

__all__ = ["load_generator_step", "sample_faces", "generated_batches"]


def load_generator_step(checkpoint: str | Path, use_ema: bool = True, device: str = "cpu") -> tuple[GANStep, dict]:
    """The GAN step of a training checkpoint, its generator holding the EMA weights if present,
    and the checkpoint's contents."""
    state = load_checkpoint(checkpoint, map_location=device)
    if "run_config" not in state or "gan" not in state["run_config"]:
        raise FaceganError(f"{checkpoint} is not a facegan GAN checkpoint (no gan config inside)")
    step = build_gan_step(from_dict(GANConfig, state["run_config"]["gan"]))
    weights, _ = module_weights(state, "generator", use_ema, checkpoint)
    step.generator.load_state_dict(weights)
    step.generator.to(device).eval()
    return step, state


def sample_faces(checkpoint: str | Path, out: str | Path, num: int = 64, grid_only: bool = False,
                 interpolate: int = 0, interpolation_steps: int = 8, seed: int = 0, use_ema: bool = True,
                 device: str = "cpu") -> dict:
    """Draw `num` faces into `out` (grid.png, and one PNG per face unless `grid_only`), and
    `interpolate` slerp strips between random latents into interpolation.png."""
    from PIL import Image

    from engine.logging import save_image_grid
    from gan.generators.models.latent import sample_latent

    if num < 1:
        raise FaceganError("--num must be at least 1")
    step, _ = load_generator_step(checkpoint, use_ema=use_ema, device=device)
    rng = torch.Generator(device=device).manual_seed(seed)
    images = step.sample(num, generator=rng)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"grid": save_image_grid(images, out / "grid.png")}
    if not grid_only:
        pixels = ((images.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for i, array in enumerate(pixels):
            Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(out / f"{i:05d}.png")
    if interpolate:
        cfg = step.config
        ends = sample_latent(2 * interpolate, cfg.latent_dim, cfg.latent_distribution, generator=rng, device=device)
        ends = ends.view(interpolate, 2, -1)
        strips = step.interpolate(ends[:, 0], ends[:, 1], interpolation_steps)
        files["interpolation"] = save_image_grid(strips, out / "interpolation.png", nrow=interpolation_steps)
    return {"faces": num, "out": str(out), "files": {k: str(v) for k, v in files.items()}}


def generated_batches(step: GANStep, n: int, seed: int, device: str, batch_size: int = 100) -> Iterator[torch.Tensor]:
    """`n` generated faces as uint8 batches, drawn reproducibly from `seed`."""
    from gan.metrics.batch import to_uint8

    rng = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, n, batch_size):
        yield to_uint8(step.sample(min(batch_size, n - start), generator=rng))
