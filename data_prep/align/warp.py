"""Batched affine warps of faces onto a template, with kornia.

Conventions: pixel (x, y) = (column, row) with integer coordinates at pixel *centres*, the
same as OpenCV's warpAffine and MTCNN's landmarks; a 2x3 matrix maps source pixels to output
pixels. kornia's `warp_affine` with ``align_corners=True`` uses exactly this convention.

Border: the default is ``"replicate"`` (kornia's ``"border"``). The thesis template keeps a
wide margin around the face, so for tight source crops (CelebA, UTKFace) part of the output
falls outside the photo. Zeros would draw a hard black wedge that a GAN learns to reproduce
and an attribute net can key on; reflection invents mirrored content (a second ear, a
mirrored earring); replicating the edge pixels gives smooth, content-free streaks.
``"zeros"`` and ``"reflect"`` are available.

Each image is first cut down to the part of it the output actually samples (plus a 2 px
margin for bilinear taps), so that an 8000x6000 photo never becomes a 550 MB float tensor,
and when the output samples the source more coarsely than 1:1.33 that crop is first shrunk
with an antialiased resize, so that large faces do not alias into the small output. The
cut-down is exact: the region a bilinear sample can touch is kept, and where a crop meets the
image edge, padding matches the border mode.

Batches of different-size images: after the cut-down, every crop is at most about
output-sized, so crops are padded to a common size (edge padding for replicate, zeros for
zeros, both of which leave results unchanged since the pad region behaves exactly like the
border mode) and warped in one `warp_affine` call. Reflection needs the whole image (the
mirrored content can come from anywhere), so ``"reflect"`` skips the cut-down and the shrink
and warps one image at a time: slower, and memory-hungry on very large photos.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from PIL import Image

from data_prep.align.similarity import affine_scale, compose_affine, invert_affine

__all__ = ["BORDER_MODES", "warp_faces", "warp_face"]

BORDER_MODES = {"replicate": "border", "zeros": "zeros", "reflect": "reflection"}
# Shrink the source first when the output samples it more coarsely than this; bilinear
# sampling of a 1.33x-too-big source still looks fine, much beyond that it aliases.
_PRESHRINK_BELOW = 0.75
_MARGIN = 2


def _as_size(output_size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) from S or (width, height)."""
    if isinstance(output_size, (int, np.integer)):
        return int(output_size), int(output_size)
    width, height = output_size
    return int(width), int(height)


def _prepare(
    image: np.ndarray, matrix: np.ndarray, out_w: int, out_h: int, border: str
) -> tuple[torch.Tensor, np.ndarray]:
    """Crop (and maybe shrink) `image` to what the warp needs; return (1,C,h,w) float, new matrix."""
    height, width = image.shape[:2]
    scale = affine_scale(matrix)
    shrink = scale < _PRESHRINK_BELOW and border != "reflect"
    # An antialiased shrink reads about 1/scale source pixels around each output tap, so the
    # crop keeps that much more context; otherwise its edge would leak into the result.
    margin = _MARGIN + (math.ceil(1.0 / scale) if shrink else 0)
    inverse = invert_affine(matrix)
    corners = np.array([[0, 0], [out_w - 1, 0], [0, out_h - 1], [out_w - 1, out_h - 1]], dtype=np.float64)
    src_corners = corners @ inverse[:, :2].T + inverse[:, 2]
    x0 = max(0, int(math.floor(src_corners[:, 0].min())) - margin)
    y0 = max(0, int(math.floor(src_corners[:, 1].min())) - margin)
    x1 = min(width, int(math.ceil(src_corners[:, 0].max())) + margin + 1)
    y1 = min(height, int(math.ceil(src_corners[:, 1].max())) + margin + 1)
    if border == "reflect" or x0 >= x1 or y0 >= y1:
        # Reflection needs the whole image; an output entirely outside the image needs only
        # the edge pixels, but keeping the image is the simplest exact answer.
        x0, y0, x1, y1 = 0, 0, width, height
    crop = np.array(image[y0:y1, x0:x1], copy=True)  # writable and contiguous, for torch
    matrix = matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    if shrink:
        crop_h, crop_w = crop.shape[:2]
        new_w, new_h = max(1, round(crop_w * scale)), max(1, round(crop_h * scale))
        # PIL shrinks uint8 in place of a float tensor of the whole crop (a face filling a
        # 40 MP photo would need 480 MB as float); its bilinear filter widens with the
        # factor, i.e. it is antialiased.
        crop = np.asarray(Image.fromarray(crop).resize((new_w, new_h), Image.BILINEAR))
        # A resize maps centre x to (x + 0.5) * new / old - 0.5, so the warp must start
        # from those coordinates instead.
        fx, fy = new_w / crop_w, new_h / crop_h
        shrink_inverse = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5]])
        matrix = compose_affine(matrix, shrink_inverse)
    tensor = torch.from_numpy(np.array(crop, copy=True)).permute(2, 0, 1)[None].float()
    return tensor, matrix


def warp_faces(
    images: Sequence[np.ndarray],
    matrices: Sequence[np.ndarray],
    output_size: int | tuple[int, int],
    border: str = "replicate",
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """Warp each HxWx3 uint8 image by its 2x3 source->output matrix; return uint8 outputs.

    Images may have different sizes; `output_size` is S or (width, height).
    """
    if border not in BORDER_MODES:
        raise ValueError(f"border must be one of {sorted(BORDER_MODES)}, got {border!r}")
    if len(images) != len(matrices):
        raise ValueError(f"warp_faces: {len(images)} images but {len(matrices)} matrices")
    if not images:
        return []
    out_w, out_h = _as_size(output_size)
    prepared = []
    for image, matrix in zip(images, matrices):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"warp_faces: need HxWx3 uint8 images, got {image.shape} {image.dtype}")
        prepared.append(_prepare(image, np.asarray(matrix, dtype=np.float64), out_w, out_h, border))

    padding_mode = BORDER_MODES[border]
    if border == "reflect":
        groups = [[i] for i in range(len(prepared))]
    else:
        groups = [list(range(len(prepared)))]
    outputs: list[np.ndarray | None] = [None] * len(prepared)
    for group in groups:
        max_h = max(prepared[i][0].shape[2] for i in group)
        max_w = max(prepared[i][0].shape[3] for i in group)
        tensors = []
        for i in group:
            tensor = prepared[i][0]
            pad_h, pad_w = max_h - tensor.shape[2], max_w - tensor.shape[3]
            if pad_h or pad_w:
                # Pad right/bottom only, so the matrix stays valid; the pad behaves exactly
                # like the border mode would beyond the image's right/bottom edge.
                mode = "replicate" if border == "replicate" else "constant"
                tensor = F.pad(tensor, (0, pad_w, 0, pad_h), mode=mode)
            tensors.append(tensor)
        batch = torch.cat(tensors).to(device)
        mats = torch.from_numpy(np.stack([prepared[i][1] for i in group])).to(device=device, dtype=torch.float32)
        warped = warp_affine(batch, mats, (out_h, out_w), mode="bilinear", padding_mode=padding_mode, align_corners=True)
        warped = warped.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for j, i in enumerate(group):
            outputs[i] = np.ascontiguousarray(warped[j])
    return outputs  # type: ignore[return-value]


def warp_face(
    image: np.ndarray,
    matrix: np.ndarray,
    output_size: int | tuple[int, int],
    border: str = "replicate",
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """`warp_faces` for one image."""
    return warp_faces([image], [matrix], output_size, border=border, device=device)[0]
