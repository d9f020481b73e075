"""`facegan align` / `align_folder` on a folder salted with every kind of bad file, and resume."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.align.aligner import AlignConfig, FaceAligner
from data_prep.align.folder import MANIFEST_COLUMNS, align_folder, read_manifest
from data_prep.align.similarity import apply_affine
from data_prep.images import load_rgb

EXPECTED_UNREADABLE = {
    "broken/empty.jpg": "empty",
    "broken/truncated.jpg": "truncated",
    "broken/notes.txt": "not_an_image",
    "broken/tiny.png": "too_small",
}
EXPECTED_ALIGNED = [
    "faces/astronaut.jpg",
    "faces/astronaut.png",
    "faces/cmyk.jpg",
    "faces/rgba.png",
    "faces/sixteen_bit.png",
    "faces/gray.png",
    "faces/exif_rotated.jpg",
    "faces/huge.jpg",
    "faces/nested/deeper/astronaut.jpg",
]


def write_salted_folder(root: Path, astronaut: np.ndarray) -> None:
    faces, broken = root / "faces", root / "broken"
    (faces / "nested" / "deeper").mkdir(parents=True)
    broken.mkdir()
    image = Image.fromarray(astronaut)
    image.save(faces / "astronaut.jpg", quality=92)
    image.save(faces / "astronaut.png")
    image.save(faces / "nested" / "deeper" / "astronaut.jpg", quality=92)
    image.convert("CMYK").save(faces / "cmyk.jpg", quality=92)
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full(astronaut.shape[:2], 230, dtype=np.uint8)))
    rgba.save(faces / "rgba.png")
    gray16 = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(faces / "sixteen_bit.png")
    assert Image.open(faces / "sixteen_bit.png").mode.startswith("I")
    image.convert("L").save(faces / "gray.png")
    # Stored sideways (rotated 90 deg counter-clockwise) with EXIF orientation 6, which tells a
    # viewer to rotate it 90 deg clockwise: upright only if the loader honours EXIF.
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(faces / "exif_rotated.jpg", quality=92, exif=exif)
    # 8000x6000 with the astronaut enlarged 6x: bigger than load_rgb's 40 MP decode limit.
    huge = np.full((6000, 8000, 3), 128, dtype=np.uint8)
    huge[1000:4072, 2000:5072] = np.asarray(image.resize((3072, 3072), Image.BILINEAR))
    Image.fromarray(huge).save(faces / "huge.jpg", quality=85)
    (broken / "empty.jpg").write_bytes(b"")
    data = (faces / "astronaut.jpg").read_bytes()
    (broken / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (broken / "notes.txt").write_text("not an image\n")
    Image.fromarray(astronaut[200:210, 200:210]).save(broken / "tiny.png")
    noise = np.random.default_rng(0).integers(0, 256, size=(160, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "noface.png")


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(AlignConfig(device="cpu", batch_size=4))


@pytest.fixture(scope="module")
def salted_run(tmp_path_factory, astronaut_rgb, aligner):
    src = tmp_path_factory.mktemp("salted_src")
    dst = tmp_path_factory.mktemp("salted_dst") / "out"
    write_salted_folder(src, astronaut_rgb)
    summary = align_folder(src, dst, aligner=aligner, progress=False)
    rows = {row["source"]: row for row in read_manifest(dst / "manifest.csv")}
    return src, dst, summary, rows


def numbers(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()])


def test_every_input_has_one_manifest_row_with_the_right_status(salted_run):
    src, dst, summary, rows = salted_run
    assert len(rows) == len(EXPECTED_UNREADABLE) + len(EXPECTED_ALIGNED) + 1
    for source, reason in EXPECTED_UNREADABLE.items():
        assert rows[source]["status"] == "unreadable" and rows[source]["reason"] == reason, rows[source]
        assert rows[source]["output"] == "" and rows[source]["detail"]
    for source in EXPECTED_ALIGNED:
        assert rows[source]["status"] == "aligned", rows[source]
        assert float(rows[source]["score"]) > 0.95
    assert rows["noface.png"]["status"] == "no_face" and rows["noface.png"]["output"] == ""
    assert summary["aligned"] == len(EXPECTED_ALIGNED) and summary["no_face"] == 1
    assert summary["unreadable"] == {"empty": 1, "not_an_image": 1, "too_small": 1, "truncated": 1}
    on_disk = json.loads((dst / "summary.json").read_text())
    assert on_disk["aligned"] == summary["aligned"] and on_disk["config"]["template"] == "thesis"


def test_outputs_mirror_the_source_tree_and_are_png_faces(salted_run):
    src, dst, _, rows = salted_run
    assert rows["faces/nested/deeper/astronaut.jpg"]["output"] == "faces/nested/deeper/astronaut.png"
    # astronaut.jpg and astronaut.png would both become astronaut.png: both keep their suffix.
    assert rows["faces/astronaut.jpg"]["output"] == "faces/astronaut.jpg.png"
    assert rows["faces/astronaut.png"]["output"] == "faces/astronaut.png.png"
    reference = load_rgb(dst / rows["faces/astronaut.png"]["output"]).astype(int)
    for source in EXPECTED_ALIGNED:
        face = load_rgb(dst / rows[source]["output"])
        assert face.shape == (128, 128, 3)
        if source != "faces/gray.png" and source != "faces/sixteen_bit.png":
            assert np.abs(face.astype(int) - reference).mean() < 12, source
    assert not list(dst.rglob("*.tmp"))


def test_manifest_geometry_is_in_the_source_files_frame(salted_run, astronaut_rgb):
    _, dst, _, rows = salted_run
    base = numbers(rows["faces/astronaut.png"]["landmarks"]).reshape(5, 2)
    # EXIF-rotated: loaded upright, so the landmarks are those of the upright portrait.
    rotated = numbers(rows["faces/exif_rotated.jpg"]["landmarks"]).reshape(5, 2)
    assert np.linalg.norm(rotated - base, axis=1).max() < 6
    assert rows["faces/exif_rotated.jpg"]["size"] == "512 512"
    # Huge: decoded at half size, detected at 1024 px, but reported in 8000x6000 pixels.
    huge = rows["faces/huge.jpg"]
    assert huge["size"] == "8000 6000" and "decoded at" in huge["detail"]
    expected = (base + 0.5) * 6 - 0.5 + [2000, 1000]
    assert np.linalg.norm(numbers(huge["landmarks"]).reshape(5, 2) - expected, axis=1).max() < 40
    matrix = numbers(huge["transform"]).reshape(2, 3)
    template = FaceAligner(AlignConfig(device="cpu")).template_points
    assert np.linalg.norm(apply_affine(matrix, numbers(huge["landmarks"]).reshape(5, 2)) - template, axis=1).max() < 8


def test_rerun_rewrites_nothing(salted_run, aligner):
    src, dst, _, rows = salted_run
    outputs = sorted(dst.rglob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in outputs}
    manifest_before = (dst / "manifest.csv").read_bytes()
    summary = align_folder(src, dst, aligner=aligner, progress=False)
    assert summary["this_run"]["processed"] == 0 and summary["pending"] == 0
    assert {p: p.stat().st_mtime_ns for p in sorted(dst.rglob("*.png"))} == before
    assert (dst / "manifest.csv").read_bytes() == manifest_before


def make_small_folder(root: Path, astronaut: np.ndarray, count: int = 5) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    small = Image.fromarray(astronaut).resize((256, 256), Image.BILINEAR)
    names = []
    for i in range(count):
        name = f"img{i}.png"
        small.rotate(8 * (i - count // 2), resample=Image.BILINEAR).save(root / name)
        names.append(name)
    (root / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return names + ["zz_broken.jpg"]


def test_interrupted_run_resumes_exactly_once(tmp_path, astronaut_rgb, aligner):
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = make_small_folder(src, astronaut_rgb)
    small_batches = FaceAligner(AlignConfig(device="cpu", batch_size=2))
    small_batches._detector = aligner.detector  # reuse the loaded nets

    def stop_after_first_batch(batch_index: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        align_folder(src, dst, aligner=small_batches, progress=False, on_batch_end=stop_after_first_batch)
    first = read_manifest(dst / "manifest.csv")
    assert [r["source"] for r in first] == names[:2]
    kept = {r["output"]: (dst / r["output"]).stat().st_mtime_ns for r in first}
    summary = json.loads((dst / "summary.json").read_text())
    assert summary["done"] == 2 and summary["pending"] == len(names) - 2

    # A kill in the middle of writing a row leaves a partial last line; it is discarded.
    with open(dst / "manifest.csv", "a", encoding="utf-8") as handle:
        handle.write("img2.png,img2.png,align")
    summary = align_folder(src, dst, aligner=small_batches, progress=False)
    rows = read_manifest(dst / "manifest.csv")
    assert sorted(r["source"] for r in rows) == sorted(names)
    assert summary["done"] == len(names) and summary["aligned"] == len(names) - 1
    assert {out: (dst / out).stat().st_mtime_ns for out in kept} == kept
    with open(dst / "manifest.csv", newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == MANIFEST_COLUMNS


def align_cli(argv: list[str]) -> int:
    """`facegan align ...` through this package's own `register`, with the exit-code
    convention of `transfer.cli.main` (FaceganError -> message, 2), so that this test does
    not depend on the rest of the command tree."""
    import argparse
    import sys

    from data_prep import cli
    from engine.errors import FaceganError

    parser = argparse.ArgumentParser(prog="facegan")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FaceganError as exc:
        print(f"facegan align: error: {exc}", file=sys.stderr)
        return 2


def test_cli_help_names_every_option():
    import argparse

    from data_prep import cli

    parser = argparse.ArgumentParser(prog="facegan")
    cli.register(parser.add_subparsers(dest="command"))
    align = parser._subparsers._group_actions[0].choices["align"]
    assert "manifest.csv" in align.description
    for action in align._actions:
        assert isinstance(action, argparse._HelpAction) or (action.help or "").strip(), action.dest
    options = {opt for action in align._actions for opt in action.option_strings}
    for field_name in AlignConfig.__dataclass_fields__:
        flag = "--no-retry" if field_name == "retry" else "--" + field_name.replace("_", "-")
        assert flag in options, flag
    assert {"--dataset", "--threads", "--limit", "--format"} <= options


def test_cli_limit_resume_format_and_changed_settings(tmp_path, astronaut_rgb, capsys):
    main = align_cli
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = make_small_folder(src, astronaut_rgb, count=3)
    common = ["align", str(src), str(dst), "--device", "cpu", "--quiet", "--threads", "1", "--format", "jpg"]
    assert main(common + ["--limit", "2", "--output-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "aligned 2" in out and "pending 0" in out
    assert [r["source"] for r in read_manifest(dst / "manifest.csv")] == names[:2]
    assert main(common + ["--output-size", "64"]) == 0
    rows = read_manifest(dst / "manifest.csv")
    assert [r["source"] for r in rows] == names
    assert rows[0]["output"] == "img0.jpg" and Image.open(dst / "img0.jpg").size == (64, 64)
    # Other settings on the same DST would mix two alignments: refused with a message.
    assert main(common + ["--output-size", "96"]) == 2
    assert "output_size" in capsys.readouterr().err
    # So would an expected face size: it can change which face is found.
    assert main(common + ["--output-size", "64", "--face-fraction", "0.3"]) == 2
    assert "face_fraction: None -> 0.3" in capsys.readouterr().err


def test_datasets_of_face_crops_say_how_much_of_the_frame_the_face_fills():
    from data_prep.cli import _face_fraction
    from data_prep.datasets.registry import expected_face_fraction

    assert expected_face_fraction("celeba") == expected_face_fraction("utkface") == 0.3
    assert expected_face_fraction("LFWA") == 0.25 and expected_face_fraction("adience") == 0.0
    assert _face_fraction(None, "celeba") == 0.3 and _face_fraction(0.0, "celeba") == 0.0
    assert _face_fraction(None, None) == 0.0
    # Unset, the setting is not recorded: folders and caches aligned before it keep their fingerprints.
    assert "face_fraction" not in AlignConfig().to_dict() and AlignConfig(face_fraction=0.3).to_dict()["face_fraction"] == 0.3


def test_dst_inside_src_is_not_fed_back(tmp_path, astronaut_rgb, aligner):
    src = tmp_path / "photos"
    make_small_folder(src, astronaut_rgb, count=1)
    dst = src / "aligned"
    align_folder(src, dst, aligner=aligner, progress=False)
    summary = align_folder(src, dst, aligner=aligner, progress=False)
    assert summary["inputs"] == 2 and summary["this_run"]["processed"] == 0


def test_center_crop_fallback_writes_an_image(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    noise = np.random.default_rng(1).integers(0, 256, size=(100, 140, 3), dtype=np.uint8)
    Image.fromarray(noise).save(src / "noise.png")
    summary = align_folder(src, dst, AlignConfig(device="cpu", on_no_face="center_crop", output_size=32), progress=False)
    row = read_manifest(dst / "manifest.csv")[0]
    assert row["status"] == "center_crop" and row["reason"] == "no_face_detected" and row["output"] == "noise.png"
    assert summary["center_crop"] == 1 and load_rgb(dst / "noise.png").shape == (32, 32, 3)


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    assert align_cli(["align", str(tmp_path / "nowhere"), str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.real_data
def test_real_face_crops_are_aligned(shared_data, aligner):
    # 20 UTKFace chips and 20 CelebA crops, evenly spread: the full-size measurement is
    # benchmarks/align_detection_rate.py (99.7% / 99.6% on 1000 each).
    images = []
    for rel in ("utkface/crop_part1", "celeba/img_align_celeba"):
        files = sorted((shared_data / rel).iterdir())
        images += [load_rgb(files[i]) for i in np.linspace(0, len(files) - 1, 20).round().astype(int)]
    results = aligner.align_batch(images)
    assert sum(r.status == "aligned" for r in results) >= 39


def test_dataset_mode_uses_the_datasets_landmarks(tmp_path, astronaut_rgb, monkeypatch):
    from types import SimpleNamespace

    from data_prep.datasets import registry
    from data_prep.datasets.record import SampleRecord

    root = tmp_path / "ds"
    (root / "imgs").mkdir(parents=True)
    Image.fromarray(astronaut_rgb).save(root / "imgs" / "a.png")
    Image.fromarray(np.ascontiguousarray(astronaut_rgb[:, ::-1])).save(root / "imgs" / "b.png")
    # Landmarks as a dataset reader provides them in meta["landmarks"] (file pixels).
    points = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]])
    mirrored = points[[1, 0, 2, 4, 3]] * [-1, 1] + [511, 0]
    records = [
        SampleRecord(root / "imgs" / "a.png", meta={"landmarks": points.tolist()}),
        SampleRecord(Path("imgs/b.png"), meta={"landmarks": mirrored.tolist()}),
        SampleRecord(root / "imgs" / "a.png", meta={"landmarks": points.tolist()}),  # listed twice
        SampleRecord(root / "imgs" / "missing.png", meta={"landmarks": points.tolist()}),
    ]
    calls = []

    def fake_load_dataset(name, dataset_root):
        calls.append((name, Path(dataset_root)))
        return SimpleNamespace(records=records)

    monkeypatch.setattr(registry, "load_dataset", fake_load_dataset)
    aligner = FaceAligner(AlignConfig(device="cpu"))
    summary = align_folder(root, tmp_path / "out", dataset="mine", aligner=aligner, progress=False)
    assert calls == [("mine", root)]
    assert aligner._detector is None, "given landmarks must not run MTCNN"
    rows = {r["source"]: r for r in read_manifest(tmp_path / "out" / "manifest.csv")}
    assert sorted(rows) == ["imgs/a.png", "imgs/b.png", "imgs/missing.png"]
    assert rows["imgs/a.png"]["reason"] == "landmarks_given" and rows["imgs/a.png"]["score"] == ""
    assert rows["imgs/missing.png"]["status"] == "unreadable" and rows["imgs/missing.png"]["reason"] == "missing"
    np.testing.assert_allclose(numbers(rows["imgs/b.png"]["landmarks"]).reshape(5, 2), mirrored, atol=0.01)
    # The thesis template is symmetric about its midline, so the mirrored face fits it equally.
    assert float(rows["imgs/a.png"]["fit_rms"]) == pytest.approx(float(rows["imgs/b.png"]["fit_rms"]), abs=2e-3)
    assert load_rgb(tmp_path / "out" / "imgs" / "b.png").shape == (128, 128, 3)
    assert summary["aligned"] == 2
