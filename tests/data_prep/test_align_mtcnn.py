"""The aligner on a real face (scikit-image's astronaut): detection, fit, warp, consistency."""
from __future__ import annotations

import math

import numpy as np
import pytest

from data_prep.align.aligner import AlignConfig, AlignConfigError, FaceAligner
from data_prep.align.similarity import apply_affine, compose_affine, invert_affine
from data_prep.align.templates import get_template
from data_prep.align.warp import warp_face


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(AlignConfig(device="cpu"))


@pytest.fixture(scope="module")
def astronaut_result(aligner, astronaut_rgb):
    return aligner.align_batch([astronaut_rgb])[0]


def random_similarity(rng, height, width, pad):
    """(2x3 original -> canvas, canvas (w, h)): rotation +-30 deg, scale 0.7-1.4, shift, padding."""
    canvas = (round(width * (1 + 2 * pad)), round(height * (1 + 2 * pad)))
    angle = math.radians(rng.uniform(-30, 30))
    scale = rng.uniform(0.7, 1.4)
    linear = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre_dst = np.array([(canvas[0] - 1) / 2, (canvas[1] - 1) / 2]) + rng.uniform(-0.1, 0.1, 2) * [width, height]
    centre_src = np.array([(width - 1) / 2, (height - 1) / 2])
    return np.concatenate([linear, (centre_dst - linear @ centre_src)[:, None]], axis=1), canvas


def test_astronaut_is_aligned_onto_the_template(aligner, astronaut_result):
    r = astronaut_result
    assert r.status == "aligned" and r.score > 0.99
    assert r.face.shape == (128, 128, 3) and r.face.dtype == np.uint8
    # The face sits in the upper-middle of the 512x512 portrait.
    assert 150 < r.box[0] < r.box[2] < 300 and 40 < r.box[1] < r.box[3] < 200
    template = get_template("thesis").scaled(128)
    mapped = apply_affine(r.transform, r.landmarks)
    distance = np.linalg.norm(mapped - template, axis=1)
    # Eyes land within 3 px of the template; the broad smile puts the mouth a little wider.
    assert distance[:2].max() < 3.0, distance
    assert distance.max() < 7.0, distance
    assert r.fit_rms == pytest.approx(np.sqrt((distance**2).mean()))


def test_warped_face_shows_the_landmarks_where_the_transform_says(aligner, astronaut_result):
    # Detecting again on the aligned crop finds the landmarks where the transform put them,
    # which checks the warp (pixel conventions included), not only the arithmetic.
    r = astronaut_result
    again = aligner.detector.detect([r.face])[0]
    assert len(again) >= 1
    expected = apply_affine(r.transform, r.landmarks)
    assert np.linalg.norm(again.landmarks[0] - expected, axis=1).max() < 2.5


def test_alignment_is_consistent_under_random_similarity_transforms(aligner, astronaut_rgb, astronaut_result):
    rng = np.random.default_rng(7)
    height, width = astronaut_rgb.shape[:2]
    transforms, images = [], []
    for _ in range(4):
        matrix, canvas = random_similarity(rng, height, width, pad=0.25)
        transforms.append(matrix)
        images.append(warp_face(astronaut_rgb, matrix, canvas, border="zeros"))
    results = aligner.align_batch(images)
    reference = astronaut_result
    template = aligner.template_points
    for matrix, r in zip(transforms, results):
        assert r.status == "aligned"
        # The transformed detection, brought back to the original and into template space.
        back = apply_affine(invert_affine(matrix), r.landmarks)
        disagreement = np.linalg.norm(apply_affine(reference.transform, back) - apply_affine(reference.transform, reference.landmarks), axis=1)
        assert disagreement.mean() < 2.0, disagreement
        # Where each crop puts the same face point: template -> original -> canvas -> crop.
        chain = compose_affine(r.transform, compose_affine(matrix, invert_affine(reference.transform)))
        assert np.linalg.norm(apply_affine(chain, template) - template, axis=1).mean() < 2.0


def test_given_landmarks_skip_detection(astronaut_rgb, astronaut_result):
    fresh = FaceAligner(AlignConfig(device="cpu"))
    r = fresh.align_batch([astronaut_rgb], [astronaut_result.landmarks])[0]
    assert fresh._detector is None, "given landmarks must not load or run MTCNN"
    assert r.status == "aligned" and r.reason == "landmarks given" and r.score is None and r.box is None
    np.testing.assert_allclose(r.transform, astronaut_result.transform)
    np.testing.assert_array_equal(r.face, astronaut_result.face)
    bad = fresh.align_batch([astronaut_rgb, astronaut_rgb], [np.zeros((4, 2)), np.ones((5, 2))])
    assert [b.status for b in bad] == ["no_face", "no_face"]
    assert "5 finite" in bad[0].reason and "coincide" in bad[1].reason


def test_mirrored_detection_maps_back(aligner, astronaut_rgb, astronaut_result):
    mirrored = aligner.detector._detect_many([astronaut_rgb], aligner.detector.thresholds, pad=0.0, mirror=True)[0]
    assert "mirrored" in mirrored.note
    # Image-left eye stays first, and the points agree with the direct detection.
    assert mirrored.landmarks[0, 0, 0] < mirrored.landmarks[0, 1, 0]
    assert np.linalg.norm(mirrored.landmarks[0] - astronaut_result.landmarks, axis=1).max() < 4.0


def test_face_selection(astronaut_rgb):
    from PIL import Image

    small = np.asarray(Image.fromarray(astronaut_rgb).resize((256, 256), Image.BILINEAR))
    canvas = np.full((600, 1100, 3), 90, dtype=np.uint8)
    canvas[0:512, 0:512] = astronaut_rgb  # big face near the left edge
    canvas[150:406, 420 + 200 : 420 + 456] = small  # small face nearer the centre
    picks = {}
    for selection in ("largest", "central"):
        r = FaceAligner(AlignConfig(device="cpu", selection=selection)).align_batch([canvas])[0]
        assert r.status == "aligned" and r.num_faces == 2 and "2 faces" in r.reason
        picks[selection] = (r.box[0] + r.box[2]) / 2
    assert picks["largest"] < 512 < picks["central"]
    # "all faces": both, each aligned like the one align_batch picks, largest first.
    aligner = FaceAligner(AlignConfig(device="cpu", selection="largest"))
    every = aligner.align_all(canvas)
    assert [r.status for r in every] == ["aligned", "aligned"] and every[0].num_faces == 2
    assert (every[0].box[0] + every[0].box[2]) / 2 < 512 < (every[1].box[0] + every[1].box[2]) / 2
    np.testing.assert_allclose(every[0].transform, aligner.align_batch([canvas])[0].transform)
    assert all(r.face.shape == (128, 128, 3) for r in every)
    assert aligner.align_all(np.full((120, 160, 3), 90, dtype=np.uint8)) == []


def test_no_face_skip_and_center_crop():
    noise = np.random.default_rng(0).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    tiny = np.zeros((10, 10, 3), dtype=np.uint8)
    skip = FaceAligner(AlignConfig(device="cpu")).align_batch([noise, tiny])
    assert [r.status for r in skip] == ["no_face", "no_face"]
    assert skip[0].face is None and "no face" in skip[0].reason
    assert "too small" in skip[1].reason
    crop = FaceAligner(AlignConfig(device="cpu", on_no_face="center_crop", output_size=64)).align_batch([noise])[0]
    assert crop.status == "center_crop" and crop.face.shape == (64, 64, 3)
    # The centred 120x120 square of the 160x120 image, resized to 64: its corners map to the
    # output's corners (pixel-edge convention), and the pixels match a plain resize.
    np.testing.assert_allclose(apply_affine(crop.transform, [[19.5, -0.5], [139.5, 119.5]]), [[-0.5, -0.5], [63.5, 63.5]])
    from PIL import Image

    reference = np.asarray(Image.fromarray(noise[:, 20:140]).resize((64, 64), Image.BILINEAR), dtype=float)
    assert np.abs(crop.face.astype(float) - reference).mean() < 25  # same content, different filters


def test_huge_image_is_detected_on_a_downscaled_copy(astronaut_rgb, astronaut_result):
    import time

    from PIL import Image

    big = np.full((6000, 8000, 3), 128, dtype=np.uint8)
    face = np.asarray(Image.fromarray(astronaut_rgb).resize((3072, 3072), Image.BILINEAR))
    big[1000:4072, 2000:5072] = face
    aligner = FaceAligner(AlignConfig(device="cpu"))
    started = time.perf_counter()
    r = aligner.align_batch([big])[0]
    assert time.perf_counter() - started < 20
    assert r.status == "aligned" and "downscaled" in r.reason
    expected = (astronaut_result.landmarks + 0.5) * 6 - 0.5 + [2000, 1000]
    # Detected at 1/7.8 scale: a few source pixels per detection pixel.
    assert np.linalg.norm(r.landmarks - expected, axis=1).max() < 40
    assert r.face.shape == (128, 128, 3)


def test_config_validation():
    with pytest.raises(AlignConfigError, match="selection"):
        AlignConfig(selection="biggest").validate()
    with pytest.raises(AlignConfigError, match="on_no_face"):
        FaceAligner(AlignConfig(on_no_face="ignore"))
    with pytest.raises(Exception, match="unknown template"):
        FaceAligner(AlignConfig(template="nope"))
    with pytest.raises(ValueError, match="uint8"):
        FaceAligner(AlignConfig(device="cpu")).align_batch([np.zeros((20, 20, 3), dtype=np.float32)])


def test_cascade_matches_facenet_when_faces_are_inside_the_frame(aligner, astronaut_rgb):
    import torch
    from facenet_pytorch.models.utils.detect_face import detect_face

    from data_prep.align.cascade import detect_faces

    d = aligner.detector
    batch = torch.from_numpy(astronaut_rgb.copy())[None].float()
    ours = detect_faces(batch, 20.0, d.pnet, d.rnet, d.onet, d.thresholds, d.factor)[0]
    with torch.no_grad():
        boxes, points = detect_face(batch, 20.0, d.pnet, d.rnet, d.onet, d.thresholds, d.factor, "cpu")
    theirs_boxes, theirs_points = np.asarray(boxes[0], dtype=float), np.asarray(points[0], dtype=float)
    order = np.argsort(-ours[0][:, 4])
    np.testing.assert_allclose(ours[0][order], theirs_boxes[np.argsort(-theirs_boxes[:, 4])], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(ours[1][order], theirs_points[np.argsort(-theirs_boxes[:, 4])], rtol=1e-5, atol=1e-3)


def test_tight_crop_landmarks_agree_with_the_padded_image(aligner, astronaut_rgb, astronaut_result):
    # A crop that cuts through the face box (forehead and chin): facenet-pytorch's cascade
    # stretches the clipped box for O-Net and misplaces the landmarks by ~23 px here; the
    # zero-padded cascade must agree with the full image.
    x0, y0 = 175, 85
    tight = np.ascontiguousarray(astronaut_rgb[y0 : y0 + 100, x0 : x0 + 100])
    found = aligner.detector._detect_many([tight], aligner.detector.thresholds, pad=0.0)[0]
    assert len(found) >= 1
    best = found.landmarks[np.argmax(found.scores)] + [x0, y0]
    assert np.linalg.norm(best - astronaut_result.landmarks, axis=1).max() < 4.0


def test_our_mtcnn_nets_and_nms_equal_facenet_pytorch_and_torchvision(monkeypatch):
    import torch
    from facenet_pytorch import MTCNN
    from torchvision.ops.boxes import batched_nms as torchvision_nms

    from data_prep.align.cascade import batched_nms
    from data_prep.align.nets import load_mtcnn_nets

    reference = MTCNN(device="cpu")
    generator = torch.Generator().manual_seed(0)
    for ours, theirs, shape in zip(load_mtcnn_nets(), (reference.pnet, reference.rnet, reference.onet),
                                   ((2, 3, 40, 50), (6, 3, 24, 24), (6, 3, 48, 48))):
        x = torch.randn(*shape, generator=generator)
        with torch.inference_mode():
            for a, b in zip(ours(x.contiguous(memory_format=torch.channels_last)), theirs(x)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for _ in range(50):
        n = int(torch.randint(1, 300, (1,), generator=generator))
        corner = torch.rand(n, 2, generator=generator) * 200
        boxes = torch.cat([corner, corner + torch.rand(n, 2, generator=generator) * 60 + 1], 1).floor()
        scores, groups = torch.rand(n, generator=generator), torch.randint(0, 4, (n,), generator=generator)
        for threshold in (0.5, 0.7):
            expected = torchvision_nms(boxes, scores, groups, threshold)
            assert torch.equal(batched_nms(boxes, scores, groups, threshold), expected)
            # and box by box, as images with more boxes than the IoU tables take are suppressed
            with monkeypatch.context() as patch:
                patch.setattr("data_prep.align.cascade._NMS_TABLE_LIMIT", 0)
                assert torch.equal(batched_nms(boxes, scores, groups, threshold), expected)


def test_an_expected_face_size_finds_the_same_face_and_falls_back_when_wrong(astronaut_rgb, astronaut_result, monkeypatch):
    from data_prep.align.mtcnn import MTCNNDetector

    crop = astronaut_rgb[20:260, 130:370]  # a face crop: the face fills about half of it
    plain, expecting = MTCNNDetector(), MTCNNDetector(face_fraction=0.3)
    a, b = plain.detect([crop])[0], expecting.detect([crop])[0]
    assert a.scores.max() > 0.99 and b.scores.max() > 0.99
    np.testing.assert_allclose(b.landmarks[b.scores.argmax()], a.landmarks[a.scores.argmax()], atol=2.0)
    # The whole photo, with a face far smaller than 95% of it: found by the full pyramid after all.
    wrong = MTCNNDetector(face_fraction=0.95).detect([astronaut_rgb])[0]
    assert len(wrong) and wrong.scores.max() > 0.99
    np.testing.assert_allclose(wrong.landmarks[wrong.scores.argmax()], astronaut_result.landmarks, atol=1.0)
    # What it changes: the pyramid starts at the expected face (72 px of this 240 px crop), not at 20 px.
    import data_prep.align.mtcnn as mtcnn_module

    seen = []
    real = mtcnn_module.detect_faces
    monkeypatch.setattr(mtcnn_module, "detect_faces", lambda images, minsize, *rest: seen.append(minsize) or real(images, minsize, *rest))
    plain.detect([crop]), expecting.detect([crop])
    assert seen == [20.0, pytest.approx(72.0)]
    with pytest.raises(ValueError, match="face_fraction"):
        MTCNNDetector(face_fraction=1.5)
