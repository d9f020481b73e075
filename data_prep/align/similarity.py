"""Least-squares similarity transforms (Umeyama, 1991) between 2-D point sets.

A similarity transform is rotation + uniform scale + translation, x' = s R x + t, with R a
proper rotation (det R = +1). Reflections are excluded on purpose: a mirrored fit would turn
a face whose landmarks were detected in the wrong order into a mirrored face instead of a
visibly bad fit.

All matrices are 2x3 affine matrices in pixel coordinates, mapping *source* points (e.g. the
landmarks detected in a photo) to *destination* points (the template in output pixels):
``dst ~= M[:, :2] @ src + M[:, 2]``.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.errors import FaceganError

__all__ = [
    "DegenerateLandmarksError",
    "umeyama",
    "umeyama_torch",
    "apply_affine",
    "invert_affine",
    "compose_affine",
    "affine_scale",
]


class DegenerateLandmarksError(FaceganError, ValueError):
    """The source points do not determine a similarity transform (e.g. all at one place)."""


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix minimising sum ||dst_i - (s R src_i + t)||^2 (float64).

    Umeyama's closed form: with centred point sets, SVD of the cross-covariance
    Sigma = U S V^T gives R = U D V^T, where D = diag(1, sign(det U det V)) forces a proper
    rotation, s = trace(S D) / var(src), t = mean(dst) - s R mean(src).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
        raise ValueError(f"umeyama: need two (N, 2) arrays of equal shape, got {src.shape} and {dst.shape}")
    if src.shape[0] < 2:
        raise DegenerateLandmarksError("umeyama: need at least 2 point pairs")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise DegenerateLandmarksError("umeyama: points contain NaN or infinity")
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c**2).sum() / len(src)
    if var_src <= 1e-12 * max(1.0, float(np.abs(src).max()) ** 2):
        raise DegenerateLandmarksError("umeyama: the source points all coincide; no transform is defined")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = (u * d) @ vt
    scale = float((s * d).sum() / var_src)
    translation = mu_dst - scale * rotation @ mu_src
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def umeyama_torch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Batched Umeyama: src (B, N, 2), dst (B, N, 2) or (N, 2) -> (B, 2, 3), in src's dtype.

    Runs on src's device. Computation is in float64 (the 2x2 SVD is cheap and float32
    loses ~1e-4 px on large images); degenerate rows raise `DegenerateLandmarksError`.
    """
    if src.ndim != 3 or src.shape[-1] != 2:
        raise ValueError(f"umeyama_torch: src must be (B, N, 2), got {tuple(src.shape)}")
    out_dtype = src.dtype if src.dtype.is_floating_point else torch.float32
    src64 = src.to(torch.float64)
    dst64 = dst.to(device=src.device, dtype=torch.float64)
    if dst64.ndim == 2:
        dst64 = dst64.expand_as(src64)
    if dst64.shape != src64.shape:
        raise ValueError(f"umeyama_torch: dst shape {tuple(dst.shape)} does not match src {tuple(src.shape)}")
    n = src64.shape[1]
    mu_src, mu_dst = src64.mean(dim=1, keepdim=True), dst64.mean(dim=1, keepdim=True)
    src_c, dst_c = src64 - mu_src, dst64 - mu_dst
    var_src = (src_c**2).sum(dim=(1, 2)) / n
    scale_ref = src64.abs().amax(dim=(1, 2)).clamp_min(1.0) ** 2
    bad = ~(var_src > 1e-12 * scale_ref)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise DegenerateLandmarksError(f"umeyama_torch: source points coincide (or are not finite) in rows {rows}")
    cov = dst_c.transpose(1, 2) @ src_c / n
    u, s, vt = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vt))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    d = torch.stack([torch.ones_like(sign), sign], dim=1)  # (B, 2)
    rotation = (u * d[:, None, :]) @ vt
    scale = (s * d).sum(dim=1) / var_src
    linear = scale[:, None, None] * rotation
    translation = mu_dst.transpose(1, 2) - linear @ mu_src.transpose(1, 2)
    return torch.cat([linear, translation], dim=2).to(out_dtype)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 matrix (or (B, N, 2) through (B, 2, 3))."""
    matrix = np.asarray(matrix, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return points @ np.swapaxes(matrix[..., :2], -1, -2) + matrix[..., None, :, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (destination -> source)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inv, -linear_inv @ matrix[:, 2:]], axis=1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of `outer` applied after `inner`."""
    outer = np.asarray(outer, dtype=np.float64)
    inner = np.asarray(inner, dtype=np.float64)
    linear = outer[:, :2] @ inner[:, :2]
    return np.concatenate([linear, outer[:, :2] @ inner[:, 2:] + outer[:, 2:]], axis=1)


def affine_scale(matrix: np.ndarray) -> float:
    """The (geometric-mean) scale factor of a 2x3 matrix: sqrt(|det|)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
