"""Templates, Umeyama similarity fits and the kornia warp: pure geometry, no detector."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data_prep.align.similarity import (
    DegenerateLandmarksError,
    affine_scale,
    apply_affine,
    compose_affine,
    invert_affine,
    umeyama,
    umeyama_torch,
)
from data_prep.align.templates import THESIS_NOSE_FRACTION, Template, TemplateError, get_template, load_template
from data_prep.align.warp import warp_face, warp_faces


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def complex_least_squares(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Independent reference: the similarity fit as complex least squares dst ~ a * src + b."""
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    zs_c, zd_c = zs - zs.mean(), zd - zd.mean()
    a = (np.conj(zs_c) * zd_c).sum() / (np.abs(zs_c) ** 2).sum()
    b = zd.mean() - a * zs.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


# ---------------------------------------------------------------- templates


def test_thesis_template_keeps_printed_points_and_derives_the_nose():
    t = get_template("thesis")
    assert t.size == (450.0, 450.0)
    np.testing.assert_allclose(t.points[[0, 1, 3, 4]], [[200, 260], [288, 260], [206, 370], [282, 370]])
    nose = t.points[2]
    # Not the misprinted (244, 488), which lies below the mouth.
    assert nose[0] == 244.0 and 260 < nose[1] < 370
    arc = get_template("arcface").points
    arc_fraction = (arc[2, 1] - arc[:2, 1].mean()) / (arc[3:, 1].mean() - arc[:2, 1].mean())
    assert THESIS_NOSE_FRACTION == pytest.approx(arc_fraction)
    assert nose[1] == pytest.approx(260 + arc_fraction * 110)


def test_arcface_template_values():
    t = get_template("arcface")
    assert t.size == (112.0, 112.0)
    np.testing.assert_allclose(t.points[0], [38.2946, 51.6963])
    np.testing.assert_allclose(t.points[4], [70.7299, 92.2041])
    np.testing.assert_allclose(t.scaled(112), t.points)


def test_portrait_template_frames_a_larger_centred_face_than_the_thesis():
    portrait, thesis = get_template("portrait"), get_template("thesis")
    assert portrait.size == (100.0, 100.0)
    np.testing.assert_allclose(portrait.points, [[37.5, 43], [62.5, 43], [50, 56.9], [39.25, 71], [60.75, 71]])

    def frame(t):  # inter-ocular distance and eye height as fractions of the canvas
        return (t.points[1, 0] - t.points[0, 0]) / t.size[0], t.points[0, 1] / t.size[1]

    (p_eyes, p_height), (t_eyes, t_height) = frame(portrait), frame(thesis)
    assert p_eyes == pytest.approx(0.25) and t_eyes == pytest.approx(88 / 450)
    assert p_height < 0.5 < t_height  # eyes above the middle: room below the chin for the neck
    # Symmetric about the vertical centre line.
    np.testing.assert_allclose(portrait.points[[0, 3], 0] + portrait.points[[1, 4], 0], 100.0)


def test_closeup_template_is_the_portrait_scaled_about_its_face_centre():
    portrait, closeup = get_template("portrait"), get_template("closeup")
    assert closeup.size == portrait.size == (100.0, 100.0)
    np.testing.assert_allclose(closeup.points, [[36, 41.32], [64, 41.32], [50, 56.888], [37.96, 72.68], [62.04, 72.68]])
    # every distance between points grows by 1.12; the point at (50, 57) stays put
    pairwise = lambda t: np.linalg.norm(t.points[:, None] - t.points[None], axis=-1)
    np.testing.assert_allclose(pairwise(closeup), 1.12 * pairwise(portrait))
    np.testing.assert_allclose(closeup.points[[0, 3], 0] + closeup.points[[1, 4], 0], 100.0)


def test_template_scaling_square_and_non_square():
    t = get_template("thesis")
    np.testing.assert_allclose(t.scaled(128), t.points * 128 / 450)
    np.testing.assert_allclose(t.scaled(450), t.points)
    rect = t.scaled((225, 900))
    np.testing.assert_allclose(rect[:, 0], t.points[:, 0] / 2)
    np.testing.assert_allclose(rect[:, 1], t.points[:, 1] * 2)


@pytest.mark.parametrize("name", ["wide_template.json", "wide_template.yaml", "wide_template.csv"])
def test_user_template_files(fixtures_dir, name):
    t = get_template(fixtures_dir / "align" / name)
    assert t.size == (256.0, 256.0)
    np.testing.assert_allclose(t.points[2], [128, 150])
    np.testing.assert_allclose(t.scaled(128)[0], [48, 60])


def test_user_template_in_code_and_errors(fixtures_dir, tmp_path):
    t = Template(np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]]), 100)
    assert get_template(t) is t
    with pytest.raises(TemplateError, match=r"bad_template.csv:4"):
        load_template(fixtures_dir / "align" / "bad_template.csv")
    with pytest.raises(TemplateError, match="5"):
        Template(np.zeros((4, 2)), 100)
    with pytest.raises(TemplateError, match="image-left eye"):
        Template(np.array([[70, 40], [30, 40], [50, 60], [35, 80], [65, 80]]), 100)
    with pytest.raises(TemplateError, match="unknown template"):
        get_template("no-such-template")
    missing_size = tmp_path / "t.json"
    missing_size.write_text('{"points": [[1,2],[3,4],[5,6],[7,8],[9,10]]}')
    with pytest.raises(TemplateError, match="size"):
        load_template(missing_size)


# ---------------------------------------------------------------- Umeyama


def test_umeyama_recovers_known_transforms_exactly():
    rng = np.random.default_rng(0)
    for _ in range(20):
        true = similarity(rng.uniform(-180, 180), rng.uniform(0.1, 5), *rng.uniform(-300, 300, size=2))
        src = rng.uniform(0, 500, size=(5, 2))
        fitted = umeyama(src, apply_affine(true, src))
        np.testing.assert_allclose(fitted, true, atol=1e-9)


def test_umeyama_torch_matches_numpy_in_a_batch():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, size=(8, 5, 2))
    dst = src + rng.normal(0, 3, size=src.shape) + rng.uniform(-50, 50, size=(8, 1, 2))
    batched = umeyama_torch(torch.from_numpy(src), torch.from_numpy(dst)).numpy()
    for i in range(8):
        np.testing.assert_allclose(batched[i], umeyama(src[i], dst[i]), atol=1e-9)
    # A shared template broadcasts over the batch; float32 in, float32 out.
    template = get_template("arcface").points
    out = umeyama_torch(torch.from_numpy(src).float(), torch.from_numpy(np.array(template)))
    assert out.dtype == torch.float32 and out.shape == (8, 2, 3)
    np.testing.assert_allclose(out[3].numpy(), umeyama(src[3], template), atol=1e-3)


def test_umeyama_is_the_least_squares_optimum_under_noise():
    rng = np.random.default_rng(2)
    true = similarity(17, 1.3, 40, -12)
    errors = []
    for _ in range(200):
        src = rng.uniform(0, 200, size=(5, 2))
        noisy = apply_affine(true, src) + rng.normal(0, 1.0, size=(5, 2))
        fitted = umeyama(src, noisy)
        # Same answer as an independent closed form of the same least-squares problem ...
        np.testing.assert_allclose(fitted, complex_least_squares(src, noisy), atol=1e-8)
        errors.append(np.abs(fitted - true).max())
    # ... and 1 px of landmark noise moves the fit only slightly.
    assert np.median(errors) < 1.0


def test_umeyama_never_reflects():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, size=(5, 2))
    mirrored = src * np.array([-1.0, 1.0]) + np.array([200.0, 0.0])
    fitted = umeyama(src, mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0
    np.testing.assert_allclose(fitted, complex_least_squares(src, mirrored), atol=1e-8)
    batched = umeyama_torch(torch.from_numpy(src[None]), torch.from_numpy(mirrored[None]))[0].numpy()
    assert np.linalg.det(batched[:, :2]) > 0
    np.testing.assert_allclose(batched, fitted, atol=1e-8)


def test_umeyama_degenerate_input():
    with pytest.raises(DegenerateLandmarksError):
        umeyama(np.ones((5, 2)) * 7, np.random.default_rng(0).uniform(size=(5, 2)))
    with pytest.raises(DegenerateLandmarksError):
        umeyama(np.full((5, 2), np.nan), np.zeros((5, 2)))
    good = np.random.default_rng(0).uniform(size=(2, 5, 2))
    good[1] = 3.0
    with pytest.raises(DegenerateLandmarksError, match=r"\[1\]"):
        umeyama_torch(torch.from_numpy(good), torch.from_numpy(good[0]))


def test_affine_helpers():
    a, b = similarity(30, 2, 5, 6), similarity(-10, 0.5, 1, -2)
    pts = np.random.default_rng(0).uniform(size=(7, 2))
    np.testing.assert_allclose(apply_affine(compose_affine(a, b), pts), apply_affine(a, apply_affine(b, pts)))
    np.testing.assert_allclose(apply_affine(invert_affine(a), apply_affine(a, pts)), pts, atol=1e-12)
    assert affine_scale(a) == pytest.approx(2)


# ---------------------------------------------------------------- warp


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:90, 0:120]
    base = np.stack([x * 2, y * 2.5, (x + y)], axis=-1) + rng.normal(0, 10, size=(90, 120, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_integer_translation_is_exact(texture):
    out = warp_face(texture, np.array([[1.0, 0, -5], [0, 1.0, -3]]), 32)
    np.testing.assert_array_equal(out, texture[3:35, 5:37])


def test_warp_matches_an_independent_bilinear_warp(texture):
    from skimage.transform import warp as sk_warp

    matrix = similarity(20, 1.1, -10, 15)
    out = warp_face(texture, matrix, (80, 64), border="replicate")
    inverse = np.vstack([invert_affine(matrix), [0, 0, 1]])
    reference = sk_warp(texture.astype(np.float64), inverse, output_shape=(64, 80), order=1, mode="edge", preserve_range=True)
    assert np.abs(out.astype(float) - reference).max() <= 1.01


def test_batch_of_different_sizes_equals_one_by_one(texture):
    images = [texture, texture[:50, :70].copy(), np.ascontiguousarray(texture[::-1, :100])]
    matrices = [similarity(10, 0.9, 5, 0), similarity(-25, 1.2, 20, -5), similarity(3, 1.0, -30, -20)]
    for border in ("replicate", "zeros", "reflect"):
        batch = warp_faces(images, matrices, 48, border=border)
        for image, matrix, out in zip(images, matrices, batch):
            np.testing.assert_array_equal(out, warp_face(image, matrix, 48, border=border))


def test_crop_before_warp_changes_nothing(texture):
    from kornia.geometry.transform import warp_affine

    matrix = similarity(-15, 1.3, -40, -30)  # samples only the middle of the image
    out = warp_face(texture, matrix, 40, border="zeros")
    full = warp_affine(
        torch.from_numpy(texture).permute(2, 0, 1)[None].float(),
        torch.from_numpy(matrix)[None].float(),
        (40, 40),
        padding_mode="zeros",
        align_corners=True,
    )
    reference = full.round().clamp(0, 255).byte()[0].permute(1, 2, 0).numpy()
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1


def test_strong_downscale_is_antialiased():
    # A 1-px checkerboard seen at 1/10 scale must come out as flat grey, not moire.
    board = ((np.indices((1000, 1000)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.repeat(board[..., None], 3, axis=2)
    out = warp_face(image, similarity(7, 0.1, 0, 0), 64).astype(float)
    assert abs(out[8:-8, 8:-8].mean() - 127.5) < 3 and out[8:-8, 8:-8].std() < 3


def test_border_modes(texture):
    # Output column x samples source column x + 100: columns >= 20 are right of the image.
    shift_out = np.array([[1.0, 0, -100.0], [0, 1.0, 0.0]])
    zeros = warp_face(texture, shift_out, 40, border="zeros")
    replicate = warp_face(texture, shift_out, 40, border="replicate")
    np.testing.assert_array_equal(zeros[:, :20], texture[:40, 100:120])
    assert (zeros[:, 20:] == 0).all()
    np.testing.assert_array_equal(replicate[:, 19:], np.repeat(texture[:40, -1:], 21, axis=1))
    with pytest.raises(ValueError, match="border"):
        warp_face(texture, shift_out, 40, border="wrap")
