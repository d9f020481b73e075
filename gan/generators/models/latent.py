"""Latent-space helpers shared by the generator families: noise sampling and slerp.

Both DCGAN (Radford et al., 2016, arXiv:1511.06434) and BEGAN (Berthelot et al., 2017,
arXiv:1703.10717) draw their noise from a uniform distribution on [-1, 1]^d; a standard normal is
offered because most later work (and slerp, White 2016, arXiv:1609.04468) assumes it.
"""
from __future__ import annotations

import torch

__all__ = ["LATENT_DISTRIBUTIONS", "sample_latent", "slerp"]

LATENT_DISTRIBUTIONS = ("uniform", "normal")


def sample_latent(
    n: int,
    dim: int,
    distribution: str = "uniform",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw `n` latent vectors of size `dim`: uniform on [-1, 1] or standard normal.

    With a `generator` the draw happens on the generator's device (the CPU for a default
    torch.Generator) and is then moved, so a seeded draw is identical whatever `device` is.
    """
    if distribution not in LATENT_DISTRIBUTIONS:
        raise ValueError(f"unknown latent distribution {distribution!r}; choose one of {LATENT_DISTRIBUTIONS}")
    draw_device = generator.device if generator is not None else device
    if distribution == "uniform":
        z = torch.rand(n, dim, generator=generator, device=draw_device).mul_(2).sub_(1)
    else:
        z = torch.randn(n, dim, generator=generator, device=draw_device)
    return z.to(device) if device is not None else z


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation between latent vectors (White 2016).

    `z0`, `z1`: (..., d); `t`: a scalar or a 1-d tensor of T fractions, giving (..., d) or
    (T, ..., d). A straight line between two Gaussian samples passes through low-norm regions the
    generator never saw in training; the great-circle path keeps the norm typical, which is why
    interpolation strips use it. Nearly parallel vectors fall back to a linear blend, where the
    great circle is numerically undefined and equal to the line anyway.
    """
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    scalar = t.ndim == 0
    t = t.reshape(-1, *([1] * z0.ndim))  # (T, 1..., 1) broadcasting against (..., d)
    u0 = z0 / z0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    u1 = z1 / z1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    omega = torch.acos((u0 * u1).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    linear = sin_omega.abs() < 1e-6
    safe = torch.where(linear, torch.ones_like(sin_omega), sin_omega)
    w0 = torch.where(linear, 1.0 - t, torch.sin((1.0 - t) * omega) / safe)
    w1 = torch.where(linear, t, torch.sin(t * omega) / safe)
    out = w0 * z0 + w1 * z1
    return out[0] if scalar else out
