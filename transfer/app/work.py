"""What the pages of `facegan serve` compute, without a web framework: load the models, read an
upload safely, find and align every face, predict, grade and explain, super-resolve, generate.

Each function takes plain arrays and paths and returns arrays, rows and text, so the page code
(`transfer.app.ui`) only lays them out, and tests call these directly.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import FaceganError

__all__ = ["AppInputError", "ServedModels", "load_served_models", "read_upload", "FacesResult", "analyse_photo",
           "SRResult", "super_resolve_photo", "task_names", "grid_of", "generate_grid", "slerp_strip", "DEMO_CHECKPOINTS",
           "SYNTHETIC_WARNING"]

log = logging.getLogger(__name__)

# Where `facegan demo` leaves its models, relative to its --out folder.
DEMO_CHECKPOINTS = {"attributes": "attributes/checkpoints/latest.pt", "sr": "sr/checkpoints/latest.pt",
                    "gan": "gan/checkpoints/latest.pt"}
SYNTHETIC_WARNING = ("trained on facegan's built-in synthetic cartoon faces, not on photos: on a real photo its "
                     "predictions and grades mean nothing. Train on real faces (see the README) and serve that checkpoint.")


class AppInputError(FaceganError, ValueError):
    """An upload the page cannot use: not an image, too large, no face in it."""


@dataclass
class ServedModels:
    """The models one server shows; any of them may be missing (its tab says so)."""

    attributes: Any = None  # attributes.inference.LoadedModel
    sr: Any = None  # gan.sr.inference.LoadedSR
    gan: Any = None  # gan.generators.step.GANStep
    paths: dict[str, Path] = field(default_factory=dict)
    synthetic: dict[str, bool] = field(default_factory=dict)  # trained on the built-in synthetic faces
    aligners: dict[tuple[str, int], Any] = field(default_factory=dict)
    # Grad-CAM hooks the trunk and backpropagates: one request at a time through a model.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def head(self) -> str | None:
        return next(iter(self.attributes.model.groups)) if self.attributes is not None else None

    def aligner(self, template: str, size: int):
        """One MTCNN aligner per (template, size), made on first use and kept."""
        from data_prep.align.aligner import AlignConfig, FaceAligner

        key = (str(template), int(size))
        if key not in self.aligners:
            self.aligners[key] = FaceAligner(AlignConfig(template=template, output_size=size, device="cpu"))
        return self.aligners[key]

    def describe(self) -> list[str]:
        lines = []
        for kind, label in (("attributes", "attribute model"), ("sr", "super-resolution model"), ("gan", "face generator")):
            if kind in self.paths:
                note = " (synthetic faces)" if self.synthetic.get(kind) else ""
                lines.append(f"{label}: {self.paths[kind]}{note}")
        return lines


def load_served_models(attributes: Path | None = None, sr: Path | None = None, gan: Path | None = None,
                       demo_dir: Path | str = "runs/demo") -> ServedModels:
    """The given checkpoints; with none given, the models `facegan demo` wrote under `demo_dir`
    (an error says to run the demo first when they are not there)."""
    from attributes.inference import load_attribute_model
    from gan.generators.inference import load_generator_step
    from gan.sr.inference import load_sr_checkpoint

    paths = {k: Path(v) for k, v in (("attributes", attributes), ("sr", sr), ("gan", gan)) if v is not None}
    if not paths:
        demo_dir = Path(demo_dir)
        paths = {k: demo_dir / v for k, v in DEMO_CHECKPOINTS.items() if (demo_dir / v).is_file()}
        if not paths:
            raise FaceganError(f"no models given and none under {demo_dir}: run `facegan demo --out {demo_dir}` first "
                               "(a few minutes on a CPU), or give --attributes / --sr / --gan checkpoints")
    for kind, path in paths.items():
        if not path.is_file():
            raise FaceganError(f"--{kind} {path}: no such checkpoint")
    models = ServedModels(paths=paths)
    if "attributes" in paths:
        models.attributes = load_attribute_model(paths["attributes"])
        models.synthetic["attributes"] = any(e.source == "synthetic" for e in models.attributes.config.datasets.values())
    if "sr" in paths:
        models.sr = load_sr_checkpoint(paths["sr"])
        models.synthetic["sr"] = (models.sr.run_config.get("data") or {}).get("source") == "synthetic"
    if "gan" in paths:
        step, state = load_generator_step(paths["gan"])
        models.gan = step
        models.synthetic["gan"] = ((state.get("run_config") or {}).get("data") or {}).get("source") == "synthetic"
    return models


def read_upload(path: str | Path | None, max_bytes: int) -> np.ndarray:
    """An uploaded file as HxWx3 uint8, or an AppInputError that says what is wrong with it."""
    from data_prep.images import ImageLoadError, load_rgb

    if path is None:
        raise AppInputError("no file: upload a photo first (or use the bundled astronaut)")
    path = Path(path)
    if path.is_file() and path.stat().st_size > max_bytes:
        raise AppInputError(f"{path.name} is {path.stat().st_size / 1e6:.1f} MB; this server takes files up to "
                            f"{max_bytes / 1e6:.0f} MB")
    try:
        return load_rgb(path)
    except ImageLoadError as exc:
        reasons = {"not_an_image": "is not an image this server can read (JPEG, PNG, WebP, BMP, TIFF, GIF)",
                   "truncated": "is cut short: the file ends before the image does",
                   "too_large": "has too many pixels to decode safely",
                   "too_small": "is too small to hold a face", "empty": "is empty"}
        detail = reasons.get(exc.reason, "could not be read")
        raise AppInputError(f"{path.name} {detail} ({exc.reason}: {exc.detail})") from exc


# ------------------------------------------------------------------------------------- faces
@dataclass
class FacesResult:
    annotated: np.ndarray  # the photo with boxes and landmarks drawn
    faces: list[np.ndarray]  # aligned faces at the model's input size
    rows: list[list[Any]]  # [face, task, prediction, confidence, grade], sorted
    overlays: list[np.ndarray]  # Grad-CAM of the chosen task over each face
    message: str


def _draw_faces(image: np.ndarray, results: list) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(image.shape[:2]) / 300))
    for k, result in enumerate(results):
        x1, y1, x2, y2 = (float(v) for v in result.box)
        draw.rectangle((x1, y1, x2, y2), outline=(0, 220, 90), width=width)
        draw.text((x1 + 2 * width, y1 + 2 * width), f"face {k + 1}", fill=(0, 220, 90))
        for x, y in result.landmarks:
            r = 1.5 * width
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 60, 60))
    return np.asarray(canvas)


def _overlay(face: np.ndarray, heat: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    coloured = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
    return (0.55 * face + 0.45 * coloured).clip(0, 255).astype(np.uint8)


def _table_rows(face_number: int, tasks: dict[str, dict]) -> list[list[Any]]:
    rows = []
    for name, entry in tasks.items():
        if "value" in entry:
            rows.append([face_number, name, f"{entry['value']:.1f}", None, ""])
            continue
        prediction = entry["prediction"]
        shown = ("yes" if prediction else "no") if isinstance(prediction, bool) else str(prediction)
        rows.append([face_number, name, shown, round(entry["confidence"], 3), entry["grade"]])
    # Most trusted first; regressions (no confidence) last.
    return sorted(rows, key=lambda r: 1.0 if r[3] is None else -r[3])


def task_names(models: ServedModels) -> list[str]:
    """The tasks of the served head, in schema order: the Grad-CAM choices."""
    if models.attributes is None:
        return []
    return [t.name for g in models.attributes.model.groups[models.head] for t in g.tasks]


def analyse_photo(models: ServedModels, path: str | Path | None, task: str | None, all_faces: bool = True,
                  max_bytes: int = 20_000_000) -> FacesResult:
    """Find the faces of an uploaded photo (all, or the one the aligner would pick), align each,
    predict every task of the served head with its confidence and grade, and explain `task`."""
    from attributes.explain import grad_cam, targets_for
    from attributes.inference import to_model_input
    from attributes.model import AttributeEnsemble
    from attributes.predict import face_predictions

    if models.attributes is None:
        raise AppInputError("this server has no attribute model: start it with --attributes CKPT")
    image = read_upload(path, max_bytes)
    loaded, head = models.attributes, models.head
    entry = loaded.config.datasets.get(head)
    aligner = models.aligner(entry.template if entry is not None else "thesis", loaded.model.input_size)
    with models.lock:
        if all_faces:
            results = aligner.align_all(image)
        else:
            results = [r for r in aligner.align_batch([image]) if r.face is not None]
        if not results:
            raise AppInputError(f"no face found in {Path(path).name}: MTCNN found no face scoring at least "
                                f"{aligner.config.min_score} and {aligner.config.min_face_size:g} px wide")
        faces = torch.from_numpy(np.stack([r.face for r in results])).permute(0, 3, 1, 2).contiguous()
        predictions = face_predictions(loaded, faces, head)
        network = loaded.model.members[0] if isinstance(loaded.model, AttributeEnsemble) else loaded.model
        names = task_names(models)
        chosen = task if task in names else names[0]
        maps = grad_cam(network, to_model_input(faces), head, targets_for(network, head, [chosen]))[chosen]
    rows = [row for k, tasks in enumerate(predictions) for row in _table_rows(k + 1, tasks)]
    overlays = [_overlay(r.face.astype(np.float32), m.numpy()) for r, m in zip(results, maps)]
    found = f"{len(results)} face{'s' if len(results) != 1 else ''} found"
    note = (f"; Grad-CAM of {chosen} from the first of the ensemble's {len(loaded.model.members)} members"
            if isinstance(loaded.model, AttributeEnsemble) else f"; Grad-CAM of {chosen}")
    return FacesResult(_draw_faces(image, results), [r.face for r in results], rows, overlays, found + note)


# ------------------------------------------------------------------------------------- super-resolution
@dataclass
class SRResult:
    aligned: np.ndarray  # the face aligned at the model's output size (the reference)
    low_resolution: np.ndarray  # what the model is given, at its input size
    bicubic: np.ndarray  # the input brought to the output size by bicubic interpolation
    super_resolved: np.ndarray
    message: str


def super_resolve_photo(models: ServedModels, path: str | Path | None, already_aligned: bool = False,
                        max_bytes: int = 20_000_000) -> SRResult:
    """Align the largest face of an upload at the SR model's output size (or, for a face that is
    already aligned, take its centre square), bring it down to the input size, and super-resolve."""
    from data_prep.degrade import bicubic_upsample
    from gan.metrics.batch import to_uint8
    from gan.sr.inference import lr_from_image, super_resolve

    if models.sr is None:
        raise AppInputError("this server has no super-resolution model: start it with --sr CKPT")
    image = read_upload(path, max_bytes)
    sr = models.sr
    if already_aligned:
        aligned = lr_from_image(image, sr.output_size).permute(1, 2, 0).numpy()
        how = "centre square of the upload"
    else:
        template = (sr.run_config.get("data") or {}).get("template", "thesis")
        with models.lock:
            results = models.aligner(template, sr.output_size).align_all(image)
        if not results:
            raise AppInputError(f"no face found in {Path(path).name}; for a face that is already cropped and aligned, "
                                "tick 'already aligned'")
        aligned = results[0].face
        how = "largest face, aligned"
    low = lr_from_image(aligned, sr.input_size)
    lr = low[None].float() / 127.5 - 1
    with models.lock:
        out = super_resolve(sr.generator, lr)[0]
    bicubic = bicubic_upsample(low[None].float(), sr.scale)[0]

    def to_image(t: torch.Tensor, value_range: tuple[float, float]) -> np.ndarray:
        return to_uint8(t, value_range).permute(1, 2, 0).numpy()

    message = (f"{how} at {sr.output_size} px, brought down to {sr.input_size} px, then x{sr.scale} "
               f"by bicubic interpolation and by the model")
    return SRResult(aligned, low.permute(1, 2, 0).numpy(), to_image(bicubic, (0.0, 255.0)),
                    to_image(out, (-1.0, 1.0)), message)


# ------------------------------------------------------------------------------------- generation
def _images(batch: torch.Tensor) -> list[np.ndarray]:
    from gan.metrics.batch import to_uint8

    pixels = to_uint8(batch).permute(0, 2, 3, 1).numpy()
    return [p.repeat(3, axis=2) if p.shape[2] == 1 else p for p in pixels]


def grid_of(images: list[np.ndarray], columns: int) -> np.ndarray:
    """Equal-sized HxWx3 images in rows of `columns`, on white with 2-pixel gaps."""
    rows = -(-len(images) // columns)
    height, width = images[0].shape[:2]
    pad = 2
    canvas = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), 255, np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        canvas[top:top + height, left:left + width] = image
    return canvas


def generate_grid(models: ServedModels, seed: int, count: int) -> np.ndarray:
    """`count` faces drawn from `seed` (the same as `facegan gan sample --seed`), as one grid."""
    if models.gan is None:
        raise AppInputError("this server has no face generator: start it with --gan CKPT")
    if not 1 <= int(count) <= 64:
        raise AppInputError(f"the count must be between 1 and 64, not {count}")
    generator = torch.Generator().manual_seed(int(seed))
    with models.lock:
        faces = models.gan.sample(int(count), generator=generator)
    return grid_of(_images(faces), columns=min(8, int(count)))


def slerp_strip(models: ServedModels, seed_a: int, seed_b: int, steps: int = 8) -> np.ndarray:
    """Faces along the spherical interpolation between the latents of two seeds, endpoints included."""
    from gan.generators.models.latent import sample_latent

    if models.gan is None:
        raise AppInputError("this server has no face generator: start it with --gan CKPT")
    if not 2 <= int(steps) <= 16:
        raise AppInputError(f"the strip needs 2 to 16 steps, not {steps}")
    config = models.gan.config
    ends = [sample_latent(1, config.latent_dim, config.latent_distribution, generator=torch.Generator().manual_seed(int(s)))[0]
            for s in (seed_a, seed_b)]
    with models.lock:
        faces = models.gan.interpolate(ends[0], ends[1], int(steps))
    return grid_of(_images(faces), columns=int(steps))
