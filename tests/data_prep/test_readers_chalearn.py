"""ChaLearn LAP apparent age (comma with header, semicolon without) and FotW (assumed format)."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from data_prep.datasets import LabelFileError, load_chalearn_lap, load_fotw, read_fotw_labels, read_lap_labels


def _tree(tmp_path, fixtures_dir, name, images: dict[str, list[str]]):
    root = tmp_path / name
    shutil.copytree(fixtures_dir / "readers" / "chalearn" / name, root)
    for folder, names in images.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for image in names:
            Image.new("RGB", (32, 32)).save(root / folder / image, format="JPEG")
    return root


def test_lap_2016_comma_with_header(tmp_path, fixtures_dir):
    root = _tree(
        tmp_path,
        fixtures_dir,
        "lap2016",
        {"train": ["000001.jpg", "000002.jpg"], "valid": ["004114.jpg", "004115.jpg"]},
    )
    data = load_chalearn_lap(root)
    assert data.split_counts() == {"train": 2, "val": 2}
    first = data.records[0]
    assert first.labels == {"Age": 25.5} and first.meta == {"age_std": 3.24}
    assert len(data.skipped) == 1 and "train_gt.csv:4" in str(data.skipped[0]) and "000003.jpg" in str(data.skipped[0])
    assert [r.path.name for r in load_chalearn_lap(root, split="val").records] == ["004114.jpg", "004115.jpg"]


def test_lap_2015_semicolon_without_header(tmp_path, fixtures_dir):
    root = _tree(
        tmp_path,
        fixtures_dir,
        "lap2015",
        {"Train": ["image_1.jpg", "image_2.jpg", "image_3.jpg"], "Validation": ["image_2519.jpg", "image_2520.jpg"]},
    )
    assert (root / "Train.csv").read_bytes().startswith(b"image_1.jpg;18\r\n")
    data = load_chalearn_lap(root)
    assert len(data) == 5 and not data.skipped
    train = {r.path.name: r for r in data.records if r.split == "train"}
    assert train["image_3.jpg"].labels["Age"] == 71.0 and train["image_3.jpg"].meta == {}
    val = {r.path.name: r for r in data.records if r.split == "val"}
    assert val["image_2519.jpg"].meta["age_std"] == 4.5


def test_lap_explicit_files_and_errors(tmp_path, fixtures_dir):
    root = _tree(tmp_path, fixtures_dir, "lap2016", {"imgs": ["000001.jpg"]})
    data = load_chalearn_lap(root, files={"test": ("train_gt.csv", "imgs")})
    assert data.split_counts() == {"test": 1}
    bad = root / "bad.csv"
    bad.write_text("image,mean,stdv\n1.jpg,20,2\n2.jpg,twenty,2\n")
    with pytest.raises(LabelFileError, match=r"bad.csv:3: unparseable age value"):
        read_lap_labels(bad)
    bad.write_text("image,mean,stdv\n1.jpg,20\n")
    with pytest.raises(LabelFileError, match=r"bad.csv:2: expected 3 fields, found 2"):
        read_lap_labels(bad)
    bad.write_text("a.jpg;130\n")
    with pytest.raises(LabelFileError, match=r"bad.csv:1: apparent age 130.0 outside"):
        read_lap_labels(bad)


def test_fotw_gender_smile(tmp_path, fixtures_dir):
    names = ["img_0001.jpg", "img_0002.jpg", "img_0003.jpg", "img_0004.jpg"]
    root = _tree(
        tmp_path, fixtures_dir, "fotw", {"train": names, "val": ["img_0101.jpg", "img_0102.jpg", "img_0103.jpg"]}
    )
    data = load_fotw(root)
    assert data.split_counts() == {"train": 4, "val": 3}
    by_name = {r.path.name: r for r in data.records}
    assert by_name["img_0001.jpg"].labels == {"Male": 1, "Smiling": 1}
    assert by_name["img_0002.jpg"].labels == {"Male": 0, "Smiling": 0}
    assert by_name["img_0003.jpg"].labels == {"Smiling": 1}, "unsure gender: no Male label"
    assert by_name["img_0003.jpg"].meta["gender_raw"] == "unsure"
    assert by_name["img_0101.jpg"].labels == {"Male": 1, "Smiling": 1}  # numeric: 0 = male, 1 = smile
    assert by_name["img_0103.jpg"].labels == {"Smiling": 0}  # 2 = unsure
    bad = root / "bad.csv"
    bad.write_text("image,gender,smile\na.jpg,male,maybe\n")
    with pytest.raises(LabelFileError, match=r"bad.csv:2: unknown smile value 'maybe'"):
        read_fotw_labels(bad)
    bad.write_text("a.jpg,other,yes\n")
    with pytest.raises(LabelFileError, match=r"bad.csv:1: unknown gender 'other'"):
        read_fotw_labels(bad)
