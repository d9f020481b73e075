"""`FaceAligner`: photos in, template-aligned faces out.

Per image: find 5 landmarks (MTCNN, or take them as given), pick one face, fit the
least-squares similarity transform from the landmarks to the template scaled to the output
size (Umeyama), and warp. Given landmarks skip detection entirely; that is how datasets with
landmark files and the built-in synthetic faces are aligned.

Defaults, and why:
- template ``"thesis"`` at 128 x 128: the thesis's own canonical face, which keeps hair, ears
  and chin in frame (CelebA's hair-colour, hat and earring attributes live there); 128 is an
  exact 2x of the 64 x 64 inputs of the GAN and transfer experiments and still shows
  detail. ``"arcface"`` at 112 is the tight, recognition-style alternative.
- ``min_score`` 0.9: 99% of real faces in CelebA/UTKFace crops score >= 0.94 (see
  benchmarks/align_detection_rate.py), while the best non-face hits we saw, found by the
  relaxed retries, scored 0.88 (an eye close-up mislabelled as a face in UTKFace) and 0.76
  (gravel); a lower bar lets such textures through.
- ``selection`` ``"central"``: face datasets centre their subject (CelebA's aligned images,
  LFW, UTKFace crops), and bystanders cut off at the border can have the larger box: in CelebA
  146539.jpg a half-visible neighbour's box is bigger than the subject's, and "largest" picked
  it. In a single-person photo the two rules agree.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from data_prep.align.mtcnn import Detection, MTCNNDetector
from data_prep.align.similarity import DegenerateLandmarksError, apply_affine, umeyama
from data_prep.align.templates import Template, get_template
from data_prep.align.warp import BORDER_MODES, warp_faces
from engine.errors import FaceganError

__all__ = ["AlignConfig", "AlignConfigError", "AlignResult", "FaceAligner", "SELECTIONS", "ON_NO_FACE", "STATUSES"]

SELECTIONS = ("largest", "central", "score")
ON_NO_FACE = ("skip", "center_crop")
STATUSES = ("aligned", "no_face", "center_crop")


class AlignConfigError(FaceganError, ValueError):
    """An aligner setting is invalid (unknown template, negative size, missing device...)."""


@dataclass
class AlignConfig:
    """Every choice the aligner makes; serialised into each run's summary.json.

    template: a built-in name ("thesis", "arcface"), a template file path, or a `Template`.
    output_size: side of the square output in pixels.
    selection: which face when there are several: "largest" box, most "central" box
        (nearest the image centre), or best "score".
    min_score: faces scored below this by MTCNN's O-Net are ignored.
    on_no_face: "skip" (status no_face, no image) or "center_crop" (the largest centred
        square, resized to the output; status center_crop).
    min_face_size: smallest face (box side in source pixels) to look for and accept.
    device: "auto", "cpu", "cuda", "cuda:N" or "mps"; used for detection and warping.
    batch_size: images per detector / warp call.
    border: what the warp shows outside the source image: "replicate", "zeros", "reflect".
    detect_max_side: images are detected on a copy whose longer side is at most this.
    retry: when no face scores >= min_score, detect again with relaxed P/R/O-Net thresholds
        and on a padded canvas, keeping the best (see `data_prep.align.mtcnn`).
    face_fraction: the smallest face expected, as a fraction of each image's shorter side (0:
        none). Dataset crops (CelebA's aligned images, UTKFace chips) are faces that fill the
        frame; knowing it, detection skips the small-face levels of the image pyramid, and an
        image where no face is found that way is detected again with the whole pyramid.
    """

    template: str | Template = "thesis"
    output_size: int = 128
    selection: str = "central"
    min_score: float = 0.9
    on_no_face: str = "skip"
    min_face_size: float = 20.0
    device: str = "auto"
    batch_size: int = 32
    border: str = "replicate"
    detect_max_side: int = 1024
    retry: bool = True
    face_fraction: float = 0.0

    def validate(self) -> "AlignConfig":
        if not isinstance(self.output_size, (int, np.integer)) or self.output_size < 8:
            raise AlignConfigError(f"output_size must be an integer >= 8, got {self.output_size!r}")
        if self.selection not in SELECTIONS:
            raise AlignConfigError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.on_no_face not in ON_NO_FACE:
            raise AlignConfigError(f"on_no_face must be one of {ON_NO_FACE}, got {self.on_no_face!r}")
        if not 0.0 <= self.min_score <= 1.0:
            raise AlignConfigError(f"min_score must be in [0, 1], got {self.min_score}")
        if not self.min_face_size > 0:
            raise AlignConfigError(f"min_face_size must be positive, got {self.min_face_size}")
        if self.batch_size < 1:
            raise AlignConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.border not in BORDER_MODES:
            raise AlignConfigError(f"border must be one of {sorted(BORDER_MODES)}, got {self.border!r}")
        if not 0.0 <= self.face_fraction < 1.0:
            raise AlignConfigError(f"face_fraction must be in [0, 1), got {self.face_fraction}")
        if self.detect_max_side < 64:
            raise AlignConfigError(f"detect_max_side must be >= 64, got {self.detect_max_side}")
        get_template(self.template)  # raises TemplateError (a FaceganError) when unknown
        return self

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if not self.face_fraction:
            # Unset, it changes nothing: left out, so that folders and caches aligned before the
            # setting existed keep their recorded settings and fingerprints.
            del data["face_fraction"]
        if isinstance(self.template, Template):
            data["template"] = self.template.to_dict()
        else:
            data["template"] = str(self.template)
        return data


@dataclass
class AlignResult:
    """What happened to one image.

    status: "aligned", "no_face" or "center_crop".
    face: output_size x output_size x 3 uint8, or None when status is no_face.
    score: MTCNN score of the chosen face (None when landmarks were given or no face).
    box: (4,) x1, y1, x2, y2 of the chosen face in source pixels (None when landmarks were
        given or no face).
    landmarks: (5, 2) in source pixels (None when no face).
    transform: 2x3 source -> output pixel matrix (None when no image was produced).
    reason: why the status (e.g. "best face score 0.62 < min_score 0.9") or what was done.
    fit_rms: root-mean-square distance, in output pixels, between the transformed landmarks
        and the template: how far this face's shape is from the template's.
    num_faces: faces that passed min_score and min_face_size.
    """

    status: str
    face: np.ndarray | None = None
    score: float | None = None
    box: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    transform: np.ndarray | None = None
    reason: str = ""
    fit_rms: float | None = None
    num_faces: int = 0


def _check_image(index: int, image, caller: str) -> None:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"{caller}: image {index} must be an HxWx3 uint8 array, got shape {shape} dtype {dtype}")


class FaceAligner:
    """Aligns batches of HxWx3 uint8 RGB images to `config.template` at `config.output_size`."""

    def __init__(self, config: AlignConfig | None = None):
        self.config = (config or AlignConfig()).validate()
        self.template: Template = get_template(self.config.template)
        self.template_points = self.template.scaled(self.config.output_size)
        try:
            from engine.device import choose_device

            self.device = choose_device(self.config.device)
        except RuntimeError as exc:
            raise AlignConfigError(str(exc)) from exc
        self._detector: MTCNNDetector | None = None

    @property
    def detector(self) -> MTCNNDetector:
        # Built on first use: aligning pre-annotated data never loads the nets.
        if self._detector is None:
            self._detector = MTCNNDetector(
                device=self.device,
                min_face_size=self.config.min_face_size,
                max_side=self.config.detect_max_side,
                batch_size=self.config.batch_size,
                retry_below=self.config.min_score,
                face_fraction=self.config.face_fraction,
                **({} if self.config.retry else {"retry_thresholds": None, "pad_retry": 0.0}),
            )
        return self._detector

    def transform_for(self, landmarks: np.ndarray) -> np.ndarray:
        """The 2x3 source -> output matrix for (5, 2) landmarks in source pixels."""
        return umeyama(landmarks, self.template_points)

    def align_image(self, path: str | Path) -> AlignResult:
        """Load `path` with `data_prep.images.load_rgb` (raises ImageLoadError) and align it."""
        from data_prep.images import load_rgb

        return self.align_batch([load_rgb(path)])[0]

    def align_batch(
        self,
        images: Sequence[np.ndarray],
        landmarks: Sequence[np.ndarray | None] | None = None,
    ) -> list[AlignResult]:
        """Align each image; `landmarks[i]` (5, 2), when given, replaces detection for image i."""
        if landmarks is not None and len(landmarks) != len(images):
            raise ValueError(f"align_batch: {len(images)} images but {len(landmarks)} landmark entries")
        for i, image in enumerate(images):
            _check_image(i, image, "align_batch")
        given = list(landmarks) if landmarks is not None else [None] * len(images)
        to_detect = [i for i, points in enumerate(given) if points is None]
        detections: dict[int, Detection] = {}
        if to_detect:
            found = self.detector.detect([images[i] for i in to_detect])
            detections = dict(zip(to_detect, found))

        results: list[AlignResult] = []
        for i, image in enumerate(images):
            if given[i] is not None:
                results.append(self._from_landmarks(given[i]))
            else:
                results.append(self._from_detection(image, detections[i]))

        warp_index = [i for i, r in enumerate(results) if r.transform is not None]
        faces = warp_faces(
            [images[i] for i in warp_index],
            [results[i].transform for i in warp_index],
            self.config.output_size,
            border=self.config.border,
            device=self.device,
        )
        for i, face in zip(warp_index, faces):
            results[i].face = face
        return results

    def align_all(self, image: np.ndarray) -> list[AlignResult]:
        """Every face of one HxWx3 uint8 image that passes `min_score` and `min_face_size`, each
        aligned, largest first: the "all faces" selection (`align_batch` keeps one face per image,
        chosen by `selection`). An image without such a face gives an empty list."""
        _check_image(0, image, "align_all")
        detection = self.detector.detect([image])[0]
        if len(detection) == 0:
            return []
        sides = np.sqrt(np.clip(detection.boxes[:, 2] - detection.boxes[:, 0], 0, None)
                        * np.clip(detection.boxes[:, 3] - detection.boxes[:, 1], 0, None))
        keep = np.flatnonzero((detection.scores >= self.config.min_score) & (sides >= self.config.min_face_size))
        results = []
        for index in keep[np.argsort(-sides[keep], kind="stable")]:
            points = detection.landmarks[index]
            try:
                matrix, rms = self._fit(points)
            except DegenerateLandmarksError:
                continue
            results.append(AlignResult("aligned", score=float(detection.scores[index]), box=detection.boxes[index].copy(),
                                       landmarks=points.copy(), transform=matrix, fit_rms=rms, num_faces=len(keep)))
        faces = warp_faces([image] * len(results), [r.transform for r in results], self.config.output_size,
                           border=self.config.border, device=self.device) if results else []
        for result, face in zip(results, faces):
            result.face = face
        return results

    # -- internals ------------------------------------------------------------------------
    def _fit(self, points: np.ndarray) -> tuple[np.ndarray, float]:
        matrix = self.transform_for(points)
        residual = apply_affine(matrix, points) - self.template_points
        return matrix, float(np.sqrt((residual**2).sum(axis=1).mean()))

    def _from_landmarks(self, points) -> AlignResult:
        try:
            points = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            return AlignResult("no_face", reason=f"given landmarks are not numbers ({exc})")
        if points.shape != (5, 2) or not np.all(np.isfinite(points)):
            return AlignResult("no_face", reason=f"given landmarks must be 5 finite (x, y) points, got shape {points.shape}")
        try:
            matrix, rms = self._fit(points)
        except DegenerateLandmarksError as exc:
            return AlignResult("no_face", landmarks=points, reason=f"given landmarks unusable: {exc}")
        return AlignResult("aligned", landmarks=points, transform=matrix, reason="landmarks given", fit_rms=rms)

    def _from_detection(self, image: np.ndarray, detection: Detection) -> AlignResult:
        height, width = image.shape[:2]
        cfg = self.config
        widths = np.clip(detection.boxes[:, 2] - detection.boxes[:, 0], 0, None)
        heights = np.clip(detection.boxes[:, 3] - detection.boxes[:, 1], 0, None)
        sides = np.sqrt(widths * heights)
        keep = (detection.scores >= cfg.min_score) & (sides >= cfg.min_face_size)
        note = f" ({detection.note})" if detection.note else ""
        if not keep.any():
            if len(detection) == 0:
                reason = f"no face detected{note}"
            elif not (detection.scores >= cfg.min_score).any():
                reason = f"best face score {detection.scores.max():.3f} < min_score {cfg.min_score}{note}"
            else:
                reason = f"every face is smaller than min_face_size {cfg.min_face_size:g} px{note}"
            return self._no_face(image, reason)

        candidates = np.flatnonzero(keep)
        boxes = detection.boxes[candidates]
        if cfg.selection == "largest":
            chosen = candidates[np.argmax(sides[candidates])]
        elif cfg.selection == "score":
            chosen = candidates[np.argmax(detection.scores[candidates])]
        else:
            centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
            distance = np.hypot(centres[:, 0] - (width - 1) / 2, centres[:, 1] - (height - 1) / 2)
            chosen = candidates[np.argmin(distance)]
        points = detection.landmarks[chosen]
        try:
            matrix, rms = self._fit(points)
        except DegenerateLandmarksError as exc:
            return self._no_face(image, f"detected landmarks unusable: {exc}")
        reason = f"{len(candidates)} faces, chose the {cfg.selection} one" if len(candidates) > 1 else ""
        if detection.note:
            reason = "; ".join(r for r in (reason, detection.note) if r)
        return AlignResult(
            "aligned",
            score=float(detection.scores[chosen]),
            box=detection.boxes[chosen].copy(),
            landmarks=points.copy(),
            transform=matrix,
            reason=reason,
            fit_rms=rms,
            num_faces=len(candidates),
        )

    def _no_face(self, image: np.ndarray, reason: str) -> AlignResult:
        if self.config.on_no_face == "skip":
            return AlignResult("no_face", reason=reason)
        height, width = image.shape[:2]
        side = min(height, width)
        size = self.config.output_size
        # The centred square [x0, x0 + side) maps onto [0, size): pixel centres map as
        # x_out = (x + 0.5) * size / side - 0.5, the same convention as every resize here.
        factor = size / side
        x0, y0 = (width - side) / 2, (height - side) / 2
        matrix = np.array(
            [[factor, 0.0, (0.5 - x0) * factor - 0.5], [0.0, factor, (0.5 - y0) * factor - 0.5]], dtype=np.float64
        )
        return AlignResult("center_crop", transform=matrix, reason=reason)
