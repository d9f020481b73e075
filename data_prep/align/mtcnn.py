"""MTCNN face detection (facenet-pytorch's P/R/O-Nets) for batches of any-size images.

The weights ship inside the facenet-pytorch wheel and are loaded from there; nothing is ever
downloaded. `MTCNNDetector.detect` takes HxWx3 uint8 RGB arrays of any sizes and returns, per
image, every face found: boxes (x1, y1, x2, y2), scores and 5 landmarks in *source* pixels.

Scaling for detection. Each image is resized before detection so that
- its longer side is at most `max_side` (default 1024): a 8000x6000 photo is detected on a
  1024x768 copy, which bounds time and memory; boxes and landmarks are scaled back;
- its shorter side is at least `min_side` (default 64): MTCNN's image pyramid needs the image
  to be larger than its smallest face window, so thumbnails are upscaled. Images whose shorter
  side is below `tiny_side` (12 px, the P-Net window) cannot hold a detectable face and are
  reported with a note instead.

The cascade itself is `data_prep.align.cascade.detect_faces`, facenet-pytorch's `detect_face`
with out-of-image crops padded as in the original MTCNN (facenet-pytorch stretches them, which
displaces the landmarks of every face that touches the frame; see that module).

Batching. The cascade batches only images of one size, so images are grouped by their
detection size and each group runs in chunks of `batch_size`. Batching pays even on the CPU
(one thread, 150 images each, two runs): CelebA 178x218 crops 28 img/s one by one, 34 img/s in
batches of 8 or 32; UTKFace 200x200 chips 44 -> 59 -> 62 img/s for batches of 1, 8, 32. Photos
of many different sizes fall back to batches of one, which costs only that gain.

Retries. Datasets such as CelebA's aligned crops or UTKFace's chips are faces that fill the
frame; MTCNN finds almost all of them as they are (even ArcFace-tight 112x112 crops), so no
padding is applied by default. With the retries below, 99.7% of 1000 UTKFace chips and 99.6%
of 1000 CelebA crops are aligned at min_score 0.9 (benchmarks/align_detection_rate.py). The
misses are hard faces (strong profile, face paint, close-ups of babies) that P- or R-Net reject
before O-Net, which would often score them well, sees them; and MTCNN is not stable under
small changes (a painted face scored 0.74, 0.89 and 0.98 with 0, 5 and 10% padding or
mirroring). So an image whose best face scores below `retry_below` is detected again with
relaxed stage thresholds `retry_thresholds`, as is, mirrored, and on a canvas edge-padded by
`pad_retry` of its longer side (as is and mirrored); the attempt with the best O-Net score wins.
Only the ~1% of images that fail pay for the four extra passes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from data_prep.align.cascade import detect_faces

__all__ = ["Detection", "MTCNNDetector"]

# MTCNN's own default smallest face window (in detection-image pixels). Going lower makes
# the first pyramid level an upscale of the whole image: slow and full of false positives.
_MIN_DETECT_FACE = 20.0


# With an expected face size (dataset crops: one large face per image), R-Net sees each image's
# best P-Net boxes and O-Net its best R-Net boxes only; the rest are near-copies of the face.
# 12 and 4 -> 6 and 2: detection 4.3 -> 3.3 ms per UTKFace chip with the same 511 of 512 found.
# 6 -> 3: detection 3.08 -> 2.74 ms per UTKFace chip and 2.15 -> 1.87 ms per CelebA crop (best
# of 4 alternating rounds on 1,536 each), the same faces found, and the same alignment quality
# (benchmarks/align_consistency.py --limit 1000 --face-fraction 0.3: landmark disagreement mean
# 1.10 px, p95 2.27 -> 2.24 px, max 5.93 px, the same 3 failures). O-Net needs its 2: with 1,
# one CelebA face moved by 11 px.
_CROP_CANDIDATES = (3, 2)


@dataclass
class Detection:
    """All faces MTCNN found in one image, in that image's pixel coordinates.

    boxes (K, 4) as x1, y1, x2, y2; scores (K,); landmarks (K, 5, 2) as (x, y) in the order
    left eye, right eye, nose, left mouth corner, right mouth corner (image-left first).
    `note` says what was done to make detection possible (e.g. "upscaled x2.00 for
    detection", "padded by 20 px; mirrored; found on retry") or why it was not attempted.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2)))
    note: str = ""

    def __len__(self) -> int:
        return len(self.scores)


class MTCNNDetector:
    """facenet-pytorch's MTCNN nets with size handling, batching and retries.

    Args:
        device: torch device for the three nets.
        min_face_size: smallest face (box side, in source pixels) to look for; on images
            downscaled for detection the effective minimum is max(this, 20 / scale).
        thresholds: P-, R-, O-Net score thresholds (MTCNN's defaults).
        factor: image-pyramid scale step (MTCNN's default 0.709).
        max_side: longer side of the detection copy of large images.
        min_side: shorter side below which an image is upscaled for detection.
        tiny_side: shorter side below which detection is not attempted.
        batch_size: images per cascade call (same detection size only).
        retry_below: images whose best face scores below this (or that have none) are
            detected again (see the module docstring); the aligner passes its min_score.
        retry_thresholds: P-, R-, O-Net thresholds of the retries (None: no relaxed retry).
        pad_retry: retries also run on a canvas edge-padded by this fraction of the longer
            side on every side (0: no padded retries).
        face_fraction: the smallest face expected, as a fraction of the image's shorter side
            (0: no expectation). Dataset crops, whose face fills much of the frame, set it: the
            image pyramid then starts at that face size, which skips most of P-Net's work.
            Images without a face scoring `retry_below` on that pass are detected again with
            the full pyramid (from `min_face_size`) before any relaxed retry.
    """

    def __init__(self, device: torch.device | str = "cpu", min_face_size: float = 20.0,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709, max_side: int = 1024,
                 min_side: int = 64, tiny_side: int = 12, batch_size: int = 32, retry_below: float = 0.9,
                 retry_thresholds: Sequence[float] | None = (0.5, 0.5, 0.5), pad_retry: float = 0.1,
                 face_fraction: float = 0.0):
        from data_prep.align.nets import load_mtcnn_nets

        if min_face_size <= 0:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        if len(thresholds) != 3:
            raise ValueError(f"thresholds needs 3 values (P, R, O nets), got {thresholds!r}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.device = torch.device(device)
        # pnet.pt / rnet.pt / onet.pt from inside the installed facenet-pytorch wheel.
        self.pnet, self.rnet, self.onet = load_mtcnn_nets(self.device)
        self.min_face_size = float(min_face_size)
        self.thresholds = [float(t) for t in thresholds]
        self.factor = float(factor)
        self.max_side = int(max_side)
        self.min_side = int(min_side)
        self.tiny_side = int(tiny_side)
        self.batch_size = max(1, int(batch_size))
        self.retry_below = float(retry_below)
        self.retry_thresholds = None if retry_thresholds is None else [float(t) for t in retry_thresholds]
        self.pad_retry = float(pad_retry)
        if not 0.0 <= face_fraction < 1.0:
            raise ValueError(f"face_fraction must be in [0, 1), got {face_fraction}")
        self.face_fraction = float(face_fraction)

    # -- public ---------------------------------------------------------------------------
    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        """Detect faces in each HxWx3 uint8 image; one `Detection` per image, in order."""
        for index, image in enumerate(images):
            if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
                raise ValueError(f"image {index}: need an HxWx3 RGB array, got shape {getattr(image, 'shape', None)}")
        results = self._detect_many(images, self.thresholds, pad=0.0, face_fraction=self.face_fraction)
        retry = self._unsure(results)
        if retry and self.face_fraction > 0:
            # The expected face size was wrong for these: the whole pyramid, as without it.
            again = self._detect_many([images[i] for i in retry], self.thresholds, pad=0.0)
            for index, candidate in zip(retry, again):
                best = results[index]
                if len(candidate) and (len(best) == 0 or candidate.scores.max() > best.scores.max()):
                    results[index] = candidate
            retry = self._unsure(results)
        if retry and (self.retry_thresholds is not None or self.pad_retry > 0):
            subset = [images[i] for i in retry]
            thresholds = self.retry_thresholds or self.thresholds
            pads = ([0.0] if self.retry_thresholds is not None else []) + ([self.pad_retry] if self.pad_retry > 0 else [])
            attempts = [
                self._detect_many(subset, thresholds, pad=pad, mirror=mirror) for pad in pads for mirror in (False, True)
            ]
            for j, index in enumerate(retry):
                best = results[index]
                for attempt in attempts:
                    candidate = attempt[j]
                    if len(candidate) and (len(best) == 0 or candidate.scores.max() > best.scores.max()):
                        best = candidate
                if best is not results[index]:
                    best.note = "; ".join(n for n in (best.note, "found on retry") if n)
                results[index] = best
        return results

    # -- internals ------------------------------------------------------------------------
    def _unsure(self, results: list[Detection]) -> list[int]:
        """The images without a face scoring `retry_below` (that could hold one)."""
        return [i for i, d in enumerate(results)
                if (len(d) == 0 or d.scores.max() < self.retry_below) and "too small" not in d.note]

    def _detect_many(
        self, images: Sequence[np.ndarray], thresholds: Sequence[float], pad: float, mirror: bool = False,
        face_fraction: float = 0.0,
    ) -> list[Detection]:
        """One detection pass over `images`, optionally on edge-padded and/or mirrored copies,
        looking for faces of at least `face_fraction` of each image's shorter side."""
        results: list[Detection | None] = [None] * len(images)
        plans: dict[tuple[int, int], list[tuple[int, tuple[float, float], int]]] = {}
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            if min(height, width) < self.tiny_side:
                results[index] = Detection(note=f"image too small for face detection ({width}x{height} px)")
                continue
            border = max(1, int(math.ceil(pad * max(height, width)))) if pad > 0 else 0
            canvas_h, canvas_w = height + 2 * border, width + 2 * border
            scale = self._detection_scale(canvas_h, canvas_w)
            size = (max(1, round(canvas_h * scale)), max(1, round(canvas_w * scale)))
            # The exact per-axis factors of the rounded size, for mapping results back.
            plans.setdefault(size, []).append((index, (size[1] / canvas_w, size[0] / canvas_h), border))

        for size, members in plans.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                # One uint8 stack and one conversion per batch: small per-image torch ops each wait for
                # both torch threads, which the decoding and writing threads keep busy.
                pixels = np.stack([self._resized(self._padded(images[i], b, mirror), size) for i, _, b in chunk])
                batch = torch.from_numpy(pixels).to(self.device).float()
                found = self._run(batch, [min(f) for _, f, _ in chunk], thresholds, face_fraction * min(size))
                for (index, factors, border), detection in zip(chunk, found):
                    notes = []
                    if factors[0] > 1:
                        notes.append(f"upscaled x{factors[0]:.2f} for detection")
                    elif factors[0] < 1:
                        notes.append(f"downscaled x{factors[0]:.3f} for detection")
                    if border:
                        notes.append(f"padded by {border} px")
                    if detection.note:
                        notes.append(detection.note)
                    detection.note = "; ".join(notes)
                    detection = self._map_back(detection, factors)
                    if border and len(detection):
                        detection.boxes = detection.boxes - border
                        detection.landmarks = detection.landmarks - border
                    if mirror:
                        detection = self._unmirror(detection, images[index].shape[1])
                    results[index] = detection
        return results  # type: ignore[return-value]

    @staticmethod
    def _padded(image: np.ndarray, border: int, mirror: bool = False) -> np.ndarray:
        if mirror:
            image = image[:, ::-1]
        if border == 0:
            return image
        return np.pad(image, ((border, border), (border, border), (0, 0)), mode="edge")

    @staticmethod
    def _unmirror(detection: Detection, width: int) -> Detection:
        """Map a detection on the mirrored image back; image-left/right landmarks swap roles."""
        detection.note = "; ".join(n for n in (detection.note, "mirrored") if n)
        if len(detection) == 0:
            return detection
        boxes = detection.boxes.copy()
        boxes[:, 0], boxes[:, 2] = width - 1 - detection.boxes[:, 2], width - 1 - detection.boxes[:, 0]
        landmarks = detection.landmarks[:, [1, 0, 2, 4, 3]].copy()
        landmarks[..., 0] = width - 1 - landmarks[..., 0]
        detection.boxes, detection.landmarks = boxes, landmarks
        return detection

    def _detection_scale(self, height: int, width: int) -> float:
        scale = min(1.0, self.max_side / max(height, width))
        if min(height, width) * scale < self.min_side:
            scale = self.min_side / min(height, width)
        return scale

    @staticmethod
    def _resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """HxWx3 uint8 `image` resized to `size` (h, w)."""
        if tuple(image.shape[:2]) != size:
            # PIL resizes the uint8 array directly (antialiased when shrinking): a 40 MP photo
            # never becomes a 480 MB float tensor just to be shrunk to 1024 px.
            image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size[1], size[0]), Image.BILINEAR))
        return image

    def _run(self, batch: torch.Tensor, scales: list[float], thresholds: Sequence[float],
             expected_face: float = 0.0) -> list[Detection]:
        """The cascade on a (B, H, W, 3) float batch of one size; `expected_face`: the smallest
        face to look for in detection pixels, when known."""
        # The smallest face in detection pixels; never below MTCNN's own window (see above).
        minsize = max(_MIN_DETECT_FACE, self.min_face_size * min(scales), expected_face)
        try:
            with torch.inference_mode():
                found = detect_faces(batch, minsize, self.pnet, self.rnet, self.onet, list(thresholds), self.factor,
                                     _CROP_CANDIDATES if expected_face > 0 else None)
        except (RuntimeError, ValueError, IndexError) as exc:
            # One odd image must not sink a batch: retry one by one, then report.
            if len(batch) > 1:
                return [self._run(batch[i : i + 1], [scales[i]], thresholds, expected_face)[0] for i in range(len(batch))]
            return [Detection(note=f"detector error: {type(exc).__name__}: {exc}")]
        return [Detection(boxes[:, :4].copy(), boxes[:, 4].copy(), points.copy()) for boxes, points in found]

    @staticmethod
    def _map_back(detection: Detection, factors: tuple[float, float]) -> Detection:
        if factors == (1.0, 1.0) or len(detection) == 0:
            return detection
        # Resizing maps pixel centre x to (x + 0.5) * f - 0.5; undo that, per axis.
        f = np.asarray(factors, dtype=np.float64)
        detection.boxes = (detection.boxes + 0.5) / np.tile(f, 2) - 0.5
        detection.landmarks = (detection.landmarks + 0.5) / f - 0.5
        return detection
