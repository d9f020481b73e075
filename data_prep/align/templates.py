"""Canonical 5-point face templates that aligned faces are warped onto.

Point order everywhere in `data_prep.align`: left eye, right eye, nose tip, left mouth corner,
right mouth corner, where "left" means image-left (the subject's right eye), exactly as MTCNN
returns them.

Built-in templates (`get_template(name)`):

``"thesis"``
    The thesis's 450x450 canonical face: eyes at (200, 260) and (288, 260), mouth corners at
    (206, 370) and (282, 370). The thesis prints the nose as (244, 488), which lies *below*
    the mouth (y = 370) and outside a sensible face, so it is a typo. We re-derive it:

    - x = 244: the midpoint of both the eyes ((200 + 288) / 2) and the mouth corners
      ((206 + 282) / 2); the face is frontal and symmetric in this template.
    - y = 314.45: the ArcFace template below (measured on many real faces) puts the nose tip
      at a fraction (71.7366 - 51.5989) / (92.2848 - 51.5989) = 0.49496 of the way from the eye
      line (mean eye y) to the mouth line (mean mouth-corner y). Applied to the thesis's eye line
      260 and mouth line 370: 260 + 0.49496 * 110 = 314.45.

    Crop: the template is defined on the full 450x450 canvas and an output of S x S pixels is
    that canvas scaled by S / 450 (`Template.scaled`). The thesis face is small in its frame
    (inter-ocular distance 88 / 450 = 20% of the width, against 31% for ArcFace) and sits
    slightly right of and below the centre (eye/mouth midline x = 244, not 225), so the crop
    keeps hair, ears, chin and some neck: context that attributes such as hair colour, hats,
    earrings or necklaces need. We keep the thesis's geometry as printed rather than
    re-centring it, so that results can be compared with the thesis.

``"portrait"``
    A 100x100 canvas for attribute recognition at 64 px: eyes at (37.5, 43) and (62.5, 43),
    nose tip (50, 56.9) (0.495 of the way from eyes to mouth, as in the thesis template), mouth corners
    at (39.25, 71) and (60.75, 71). The inter-ocular distance is 25% of the width (thesis 20%)
    and the face is centred with its eyes above the middle, so a 64 px crop spends more pixels
    on eyes, brows and mouth and still keeps the hair and the neck, while the thesis crop puts
    empty frame above the head and cuts below the chin. On CelebA's held-out people it raised
    the 40-attribute mean of `celeba64` from 88.25% to 88.55% (two seeds each; docs/results/README.md):
    mouth, cheekbones, eyebrows and age gained, hair texture lost a little.

``"closeup"``
    "portrait" scaled 1.12x about (50, 57), the middle of its face: inter-ocular distance 28% of
    the width, eyes at (36, 41.3) and (64, 41.3), mouth corners at (37.96, 72.68) and
    (62.04, 72.68). The top of the hair and the neck below the chin leave the frame; the eyes,
    brows and mouth gain 12% more pixels each way. CelebA's held-out people, two-member
    ensembles of 1,700 steps: 89.39% against 89.20% with "portrait" (docs/results/README.md).

``"arcface"``
    The 112x112 5-point template used by ArcFace / insightface recognisers, a tight crop of
    the inner face (forehead to chin).

User templates: `get_template(path)` reads JSON, YAML or CSV (formats in `load_template`), or
build one in code with `Template(points, size)`.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import FaceganError

__all__ = [
    "Template",
    "TemplateError",
    "template_metadata",
    "TEMPLATES",
    "THESIS_NOSE_FRACTION",
    "get_template",
    "load_template",
    "template_names",
]


class TemplateError(FaceganError, ValueError):
    """A template name is unknown or a template file is malformed."""


# Where the nose tip sits between the eye line and the mouth line in the ArcFace template;
# used to fill in the thesis's misprinted nose (see the module docstring).
_ARCFACE_POINTS = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
_arc = np.asarray(_ARCFACE_POINTS)
_eye_y = _arc[:2, 1].mean()
_mouth_y = _arc[3:, 1].mean()
THESIS_NOSE_FRACTION = float((_arc[2, 1] - _eye_y) / (_mouth_y - _eye_y))
del _arc, _eye_y, _mouth_y

_THESIS_POINTS = (
    (200.0, 260.0),
    (288.0, 260.0),
    (244.0, 260.0 + THESIS_NOSE_FRACTION * (370.0 - 260.0)),
    (206.0, 370.0),
    (282.0, 370.0),
)

_PORTRAIT_POINTS = (
    (37.5, 43.0),
    (62.5, 43.0),
    (50.0, 56.9),  # 43 + 0.495 * (71 - 43), the thesis template's nose fraction, rounded
    (39.25, 71.0),
    (60.75, 71.0),
)

# "closeup" is "portrait" scaled about the middle of its face: same canvas, bigger face
_CLOSEUP_ZOOM, _CLOSEUP_CENTRE = 1.12, (50.0, 57.0)
_CLOSEUP_POINTS = (np.asarray(_PORTRAIT_POINTS) - _CLOSEUP_CENTRE) * _CLOSEUP_ZOOM + _CLOSEUP_CENTRE


@dataclass(frozen=True)
class Template:
    """Five reference points (x, y) in pixels of a `size` = (width, height) canvas.

    `scaled(output_size)` gives the points in the pixels of an output image; the whole canvas
    is scaled, so the crop is always the template's full canvas.
    """

    points: np.ndarray
    size: tuple[float, float]
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        try:
            points = np.asarray(self.points, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TemplateError(f"template {self.name!r}: points must be numbers ({exc})") from exc
        if points.shape != (5, 2):
            raise TemplateError(f"template {self.name!r}: need 5 (x, y) points, got shape {points.shape}")
        if not np.all(np.isfinite(points)):
            raise TemplateError(f"template {self.name!r}: points must be finite numbers")
        size = _as_size(self.size, self.name)
        if points[1, 0] <= points[0, 0]:
            # An image-left eye to the right of the image-right eye is a mirrored template,
            # which a reflection-free similarity fit cannot reach; say so instead of producing
            # upside-down faces.
            raise TemplateError(
                f"template {self.name!r}: the first point (image-left eye) must have a smaller x than the second"
            )
        points.setflags(write=False)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "size", size)

    def scaled(self, output_size: int | tuple[int, int]) -> np.ndarray:
        """Points in output pixels for an output of `output_size` (S or (width, height)).

        A non-square output scales x and y separately, which distorts the face unless the
        aspect ratio matches the template's canvas; aligners fit a similarity transform, so
        they use square outputs of square templates.
        """
        width, height = _as_size(output_size, self.name)
        factor = np.array([width / self.size[0], height / self.size[1]])
        return self.points * factor

    def to_dict(self) -> dict:
        return {"name": self.name, "size": list(self.size), "points": self.points.tolist()}


def _as_size(size, name: str) -> tuple[float, float]:
    if np.isscalar(size):
        size = (size, size)
    try:
        width, height = (float(v) for v in size)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TemplateError(f"template {name!r}: size must be a number or (width, height), got {size!r}") from exc
    if not (width > 0 and height > 0 and np.isfinite(width) and np.isfinite(height)):
        raise TemplateError(f"template {name!r}: size must be positive, got {size!r}")
    return (width, height)


TEMPLATES: dict[str, Template] = {
    "thesis": Template(np.array(_THESIS_POINTS), (450, 450), name="thesis"),
    "arcface": Template(np.array(_ARCFACE_POINTS), (112, 112), name="arcface"),
    "portrait": Template(np.array(_PORTRAIT_POINTS), (100, 100), name="portrait"),
    "closeup": Template(_CLOSEUP_POINTS, (100, 100), name="closeup"),
}


def template_names() -> list[str]:
    return sorted(TEMPLATES)


def get_template(name_or_path: str | Path | Template) -> Template:
    """A built-in template by name, a template file by path, or a `Template` passed through."""
    if isinstance(name_or_path, Template):
        return name_or_path
    key = str(name_or_path)
    if key in TEMPLATES:
        return TEMPLATES[key]
    path = Path(key)
    if path.suffix.lower() in (".json", ".yaml", ".yml", ".csv") or path.exists():
        return load_template(path)
    raise TemplateError(f"unknown template {key!r}: use one of {template_names()} or a .json/.yaml/.csv file")


def template_metadata(name_or_path: str | Path | Template, output_size: int) -> dict:
    """How faces were aligned, for a file that leaves facegan (an ONNX export): the template's
    name and its five points (image-left eye, image-right eye, nose, image-left and image-right
    mouth corner) in pixels of an `output_size` square face. A template file that is no longer
    there keeps its name only."""
    try:
        template = get_template(name_or_path)
    except TemplateError as exc:
        return {"name": str(name_or_path), "output_size": output_size, "points": None, "note": str(exc)}
    return {"name": template.name, "output_size": output_size,
            "points": [[round(float(x), 4), round(float(y), 4)] for x, y in template.scaled(output_size)]}


def load_template(path: str | Path) -> Template:
    """Read a template file.

    JSON / YAML: ``{"size": 112 or [w, h], "points": [[x, y] x 5]}`` (optional ``"name"``).
    CSV: one ``x,y`` row per point in the documented order, optionally preceded by a header
    row ``x,y``, plus one row ``size,S`` or ``size,W,H`` anywhere.
    """
    path = Path(path)
    if not path.is_file():
        raise TemplateError(f"template file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{path}: cannot read template file ({exc})") from exc
    if suffix in (".json", ".yaml", ".yml"):
        try:
            if suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:  # json and yaml raise different error types
            raise TemplateError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from exc
        if not isinstance(data, dict) or "points" not in data or "size" not in data:
            raise TemplateError(f"{path}: expected a mapping with 'points' (5 [x, y] pairs) and 'size'")
        points, size = data["points"], data["size"]
        name = str(data.get("name", path.stem))
    elif suffix == ".csv":
        points, size, name = [], None, path.stem
        for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells or cells[0].startswith("#"):
                continue
            if cells[0].lower() == "size":
                size = cells[1:]
                continue
            if [c.lower() for c in cells] == ["x", "y"]:
                continue
            if len(cells) != 2:
                raise TemplateError(f"{path}:{line_no}: expected 'x,y', got {','.join(cells)!r}")
            try:
                points.append([float(cells[0]), float(cells[1])])
            except ValueError as exc:
                raise TemplateError(f"{path}:{line_no}: not a number in {','.join(cells)!r}") from exc
        if size is None:
            raise TemplateError(f"{path}: missing a 'size,S' (or 'size,W,H') row")
        try:
            size = [float(v) for v in size]
        except ValueError as exc:
            raise TemplateError(f"{path}: size row must hold numbers, got {size!r}") from exc
        size = size[0] if len(size) == 1 else size
    else:
        raise TemplateError(f"{path}: template files must be .json, .yaml, .yml or .csv")
    try:
        points = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TemplateError(f"{path}: points must be numbers ({exc})") from exc
    try:
        return Template(points, size, name=name)
    except TemplateError as exc:
        raise TemplateError(f"{path}: {exc}") from exc
