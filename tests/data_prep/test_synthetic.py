"""The built-in synthetic faces: deterministic, labelled by what is drawn, landmarks that follow
the face in both domains, and a generator that reuses complete output and redoes interrupted
output."""
import argparse
import csv
import json

import numpy as np
import pytest
from PIL import Image

from data_prep import cli as data_prep_cli
from data_prep import synthetic
from data_prep.datasets.record import DatasetNotFoundError, LabelFileError
from data_prep.images import load_rgb
from data_prep.synthetic import (
    HAIR_COLORS,
    SYNTHETIC_SCHEMA,
    SyntheticConfig,
    SyntheticDataError,
    generate_synthetic,
    is_complete,
    load_synthetic,
    render_faces,
)

SMALL = SyntheticConfig(num_identities=6, images_per_identity=2, image_size=32, seed=3)


def _luminance(images: np.ndarray) -> np.ndarray:
    return images[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "data", SMALL, progress=False)


def test_render_is_deterministic_per_seed():
    a = render_faces(6, seed=11, domain="wild", size=40)
    b = render_faces(6, seed=11, domain="wild", size=40)
    c = render_faces(6, seed=12, domain="wild", size=40)
    assert a.images.shape == (6, 40, 40, 3) and a.images.dtype == np.uint8
    assert a.landmarks.shape == (6, 5, 2)
    assert a.images.tobytes() == b.images.tobytes()
    assert np.array_equal(a.landmarks, b.landmarks)
    assert all(np.array_equal(a.labels[k], b.labels[k]) for k in a.labels)
    assert a.images.tobytes() != c.images.tobytes()


def test_labels_follow_the_schema_with_plausible_priors():
    faces = render_faces(600, seed=1, domain="studio", size=16)
    assert set(faces.labels) == set(SYNTHETIC_SCHEMA.names)
    for i in range(0, 600, 37):
        SYNTHETIC_SCHEMA.validate({k: v[i].item() for k, v in faces.labels.items()})
    rates = {name: faces.labels[name].mean() for name in ("Smiling", "Eyeglasses", "Male", "Bangs", "Wearing_Hat")}
    # Balanced-ish, never degenerate, and not all 50%.
    assert 0.38 < rates["Smiling"] < 0.6
    assert 0.12 < rates["Eyeglasses"] < 0.3
    assert 0.32 < rates["Male"] < 0.52
    assert 0.12 < rates["Bangs"] < 0.33
    assert 0.06 < rates["Wearing_Hat"] < 0.2
    hair = np.bincount(faces.labels["Hair_Color"], minlength=len(HAIR_COLORS)) / 600
    assert (hair > 0.08).all(), dict(zip(HAIR_COLORS, hair))
    age = faces.labels["Age"]
    assert age.min() >= 18 and age.max() <= 80 and 30 < age.mean() < 50
    # Gray hair comes with age.
    gray = faces.labels["Hair_Color"] == HAIR_COLORS.index("gray")
    assert age[gray].mean() > age[~gray].mean() + 15


def test_attributes_are_learnable_from_pixels():
    """A linear model on raw 32x32 studio pixels must beat the majority class clearly: the labels
    are in the picture, not only in the CSV."""
    import torch

    train = render_faces(700, seed=1, domain="studio", size=32)
    test = render_faces(250, seed=2, domain="studio", size=32)
    x_train = torch.from_numpy(train.images).float().reshape(700, -1) / 255.0
    x_test = torch.from_numpy(test.images).float().reshape(250, -1) / 255.0
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    wanted = {"Smiling": 0.8, "Eyeglasses": 0.93, "Male": 0.85, "Bangs": 0.85, "Wearing_Hat": 0.93}
    for name, floor in wanted.items():
        y = torch.from_numpy(train.labels[name]).float()
        w = torch.zeros(x_train.shape[1], requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=60)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x_train @ w + b, y) + 1e-2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            accuracy = ((x_test @ w + b > 0).numpy() == test.labels[name]).mean()
        majority = max(test.labels[name].mean(), 1 - test.labels[name].mean())
        assert accuracy > max(floor, majority + 0.05), (name, accuracy, majority)
    age = torch.from_numpy(train.labels["Age"]).float()
    w = torch.linalg.solve(x_train.T @ x_train + 300 * torch.eye(x_train.shape[1]), x_train.T @ (age - age.mean()))
    assert np.corrcoef((x_test @ w).numpy(), test.labels["Age"])[0, 1] > 0.5


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels whose colour differs visibly (gray hair on pale skin differs in hue, not luminance)."""
    return np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 20


def _redraw_with(attribute: str, value: bool, n: int = 24, size: int = 64):
    """The same faces drawn twice, differing only in one per-image attribute."""
    ident = synthetic._sample_identities(np.random.default_rng(0), n)
    params = synthetic._sample_images(np.random.default_rng(1), ident, np.arange(n), "studio")
    on, off = dict(params), dict(params)
    on[attribute] = np.full(n, value)
    off[attribute] = np.full(n, not value)
    (img_on, lm_on), (img_off, _) = synthetic._draw(on, size, "studio"), synthetic._draw(off, size, "studio")
    return img_on, img_off, lm_on


def test_eyeglasses_are_dark_frames_around_the_eyes():
    with_glasses, without, landmarks = _redraw_with("glasses", True)
    changed = _changed(with_glasses, without)
    rows, cols = np.mgrid[0:64, 0:64]
    for i in range(len(changed)):
        eye_distance = np.min([np.hypot(cols - x, rows - y) for x, y in landmarks[i, :2]], axis=0)
        assert changed[i].sum() > 20
        # Frames sit around the eyes (arms reach to the ears), and they are darker than what they cover.
        assert (eye_distance[changed[i]] < 0.75 * np.hypot(*(landmarks[i, 0] - landmarks[i, 1]))).mean() > 0.7
        assert _luminance(with_glasses)[i][changed[i]].mean() < 0.85 * _luminance(without)[i][changed[i]].mean()


def test_smiling_changes_only_the_mouth():
    smiling, neutral, landmarks = _redraw_with("smiling", True)
    changed = _changed(smiling, neutral)
    rows, cols = np.mgrid[0:64, 0:64]
    for i in range(len(changed)):
        mouth = landmarks[i, 3:].mean(axis=0)
        assert changed[i].sum() > 5
        assert np.hypot(cols - mouth[0], rows - mouth[1])[changed[i]].max() < 10


def test_hats_and_bangs_are_above_the_eyes():
    for attribute in ("hat", "bangs"):
        on, off, landmarks = _redraw_with(attribute, True)
        changed = _changed(on, off)
        rows = np.mgrid[0:64, 0:64][0]
        for i in range(len(changed)):
            assert changed[i].sum() > 15, attribute
            eye_line = landmarks[i, :2, 1].mean()
            assert (rows[changed[i]] < eye_line).mean() > 0.9, attribute


def test_wild_landmarks_stay_on_the_eyes_after_the_random_transform():
    faces = render_faces(40, seed=5, domain="wild", size=96)
    lum = np.pad(_luminance(faces.images), ((0, 0), (1, 1), (1, 1)), mode="edge")

    def dark_eyes(landmarks):
        hits = []
        for i in range(len(lum)):
            darkest = []
            for x, y in np.round(landmarks[i, :2]).astype(int) + 1:
                patch = lum[i, max(0, y - 1):y + 2, max(0, x - 1):x + 2]
                darkest.append(patch.min() if patch.size else 255)
            hits.append(max(darkest) < 80)  # the pupil under both eye landmarks
        return np.mean(hits)

    assert dark_eyes(faces.landmarks) > 0.9
    # Control: another image's landmarks land on eyes far less often, so the check has teeth.
    assert dark_eyes(np.roll(faces.landmarks, 1, axis=0)) < 0.4
    # The transform really varies: eye-line angles and eye distances spread out.
    delta = faces.landmarks[:, 1] - faces.landmarks[:, 0]
    assert np.degrees(np.arctan2(delta[:, 1], delta[:, 0])).std() > 6
    assert np.hypot(delta[:, 0], delta[:, 1]).std() > 1.0


def test_domains_differ_in_background_and_pose():
    studio = render_faces(24, seed=2, domain="studio", size=48)
    wild = render_faces(24, seed=2, domain="wild", size=48)

    def corner_std(images):
        corners = np.concatenate([images[:, :6, :6], images[:, :6, -6:]], axis=1).astype(float)
        return corners.reshape(len(images), -1, 3).std(axis=1).mean()

    assert corner_std(wild.images) > 3 * corner_std(studio.images)
    assert wild.landmarks[:, 2].std(axis=0).mean() > 2 * studio.landmarks[:, 2].std(axis=0).mean()


def test_generate_and_load_round_trip(small_root):
    dataset = load_synthetic(small_root)
    assert len(dataset) == SMALL.num_images == 24
    assert dataset.schema == SYNTHETIC_SCHEMA
    assert not dataset.skipped
    record = dataset.records[0]
    assert load_rgb(record.path).shape == (32, 32, 3)
    assert np.asarray(record.meta["landmarks"]).shape == (5, 2)
    assert record.meta["domain"] in ("studio", "wild")
    # Identity-disjoint splits, the same person in both domains.
    by_identity = {}
    for r in dataset.records:
        by_identity.setdefault(r.identity, set()).add((r.split, r.meta["domain"]))
    assert len(by_identity) == 6
    assert all(len({split for split, _ in v}) == 1 for v in by_identity.values())
    assert all({d for _, d in v} == {"studio", "wild"} for v in by_identity.values())
    assert set(dataset.split_counts()) == {"train", "val", "test"}
    studio_train = load_synthetic(small_root, domain="studio", split="train")
    assert {r.meta["domain"] for r in studio_train.records} == {"studio"}
    assert {r.split for r in studio_train.records} == {"train"}
    with pytest.raises(SyntheticDataError):
        load_synthetic(small_root, domain="indoor")


def test_generation_is_byte_identical_for_a_seed(tmp_path, small_root):
    again = generate_synthetic(tmp_path / "again", SMALL, progress=False)
    files = sorted(p.relative_to(small_root) for p in small_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (small_root / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = generate_synthetic(tmp_path / "other", SyntheticConfig(**{**SMALL.__dict__, "seed": 4}), progress=False)
    assert (other / "labels.csv").read_bytes() != (small_root / "labels.csv").read_bytes()


def test_complete_output_is_reused_and_a_changed_config_regenerates(tmp_path):
    root = generate_synthetic(tmp_path / "d", SMALL, progress=False)
    image = next((root / "images" / "studio").glob("*.png"))
    stamp = image.stat().st_mtime_ns
    assert is_complete(root, SMALL)
    generate_synthetic(root, SMALL, progress=False)
    assert image.stat().st_mtime_ns == stamp, "a complete dataset must not be rewritten"
    bigger = SyntheticConfig(**{**SMALL.__dict__, "images_per_identity": 3})
    assert not is_complete(root, bigger)
    generate_synthetic(root, bigger, progress=False)
    assert len(load_synthetic(root)) == 36


def test_interrupted_generation_is_detected_and_redone(tmp_path, monkeypatch, small_root):
    real = synthetic._draw_chunk
    calls = {"n": 0}

    def crash_on_second_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_draw_chunk", crash_on_second_chunk)
    root = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(root, SMALL, progress=False)
    assert not (root / "labels.csv").exists() and not is_complete(root, SMALL)
    with pytest.raises(DatasetNotFoundError, match="incomplete"):
        load_synthetic(root)
    monkeypatch.setattr(synthetic, "_draw_chunk", real)
    generate_synthetic(root, SMALL, progress=False)
    assert is_complete(root, SMALL)
    assert (root / "labels.csv").read_bytes() == (small_root / "labels.csv").read_bytes()


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(SyntheticDataError, match="not empty"):
        generate_synthetic(tmp_path, SMALL, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_bad_rows_name_the_file_and_line(tmp_path, small_root):
    root = tmp_path / "copy"
    generate_synthetic(root, SMALL, progress=False)
    rows = list(csv.DictReader(open(root / "labels.csv", newline="")))
    rows[4]["Hair_Color"] = "purple"
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(LabelFileError, match=r"labels\.csv:6: .*purple"):
        load_synthetic(root)
    with pytest.raises(DatasetNotFoundError, match="facegan data synth"):
        load_synthetic(tmp_path / "nothing")


def test_invalid_configs_are_refused(tmp_path):
    for bad in (dict(num_identities=0), dict(image_size=8), dict(domains=("studio", "mars")),
                dict(split_fractions=(0.5, 0.1, 0.1))):
        with pytest.raises(SyntheticDataError):
            generate_synthetic(tmp_path / "x", SyntheticConfig(**bad), progress=False)


def test_cli_writes_data_and_preview(tmp_path, capsys):
    commands = argparse.ArgumentParser().add_subparsers(dest="command")
    data_prep_cli.register(commands)
    parser = commands.choices["data"]
    preview = tmp_path / "preview.png"
    args = parser.parse_args(["synth", str(tmp_path / "out"), "--num-identities", "4", "--images-per-identity", "2",
                              "--size", "32", "--seed", "9", "--preview", str(preview), "--no-progress"])
    assert args.func(args) == 0
    assert "16 images" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "schema.json").read_text())
    assert meta["config"]["seed"] == 9 and meta["config"]["image_size"] == 32
    with Image.open(preview) as image:
        assert image.width == 8 * 128 and image.height > 2 * 128  # a block of faces per domain
