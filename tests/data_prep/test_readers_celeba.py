"""CelebA reader: the official CRLF layout, a copy without count line, the Kaggle CSVs, saved
HTML pages, bad rows, and the real subset plus the full 202,599-row label file."""

from __future__ import annotations

import shutil
import time
import warnings

import pytest
import torch
from PIL import Image

from data_prep.datasets import (
    CELEBA_ATTRIBUTES,
    DatasetNotFoundError,
    LabelFileError,
    load_celeba,
    read_celeba_attributes,
    read_celeba_bboxes,
    read_celeba_landmarks,
    read_celeba_partition,
)

NAMES = [f"{i:06d}.jpg" for i in range(1, 7)]


def _images(folder, names=NAMES, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (size, size), (10 * i, 100, 200)).save(folder / name)


@pytest.fixture()
def official(tmp_path, fixtures_dir):
    root = tmp_path / "celeba"
    shutil.copytree(fixtures_dir / "readers" / "celeba" / "official", root)
    _images(root / "Img" / "img_align_celeba")
    return root


def test_official_layout_crlf_count_line_and_padding(official):
    raw = (official / "Anno" / "list_attr_celeba.txt").read_bytes()
    assert b"Young \r\n" in raw and raw.startswith(b"6\r\n"), "fixture must keep CelebA's CRLF and trailing space"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a well-formed file warns about nothing
        data = load_celeba(official)
    assert len(data) == 6 and not data.skipped
    assert data.schema.names == list(CELEBA_ATTRIBUTES)
    first = data.records[0]
    assert first.path.name == "000001.jpg" and first.identity == "2880" and first.split == "train"
    # 000001.jpg -1  1  1 -1 ... : Arched_Eyebrows and Attractive are +1, 5_o_Clock_Shadow -1.
    assert (
        first.labels["5_o_Clock_Shadow"] == 0
        and first.labels["Arched_Eyebrows"] == 1
        and first.labels["Attractive"] == 1
    )
    assert set(first.labels.values()) <= {0, 1}
    assert first.meta["landmarks"] == [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]]
    # Boxes are in in-the-wild coordinates: kept apart for aligned images.
    assert first.meta["bbox_wild"] == [95, 71, 226, 313] and "bbox" not in first.meta
    assert data.split_counts() == {"train": 4, "val": 1, "test": 1}
    assert [r.path.name for r in load_celeba(official, split="test").records] == ["000006.jpg"]
    item = data[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert item["targets"].shape == (40,) and bool(item["mask"].all())


def test_wild_images_get_box_and_missing_images_are_skipped(official):
    _images(official / "Img" / "img_celeba", NAMES[:4])
    data = load_celeba(official, images="wild")
    assert len(data) == 4
    assert data.records[0].meta["bbox"] == [95, 71, 226, 313]
    assert "landmarks" not in data.records[0].meta, "aligned landmarks must not be attached to wild images"
    reasons = [str(s) for s in data.skipped]
    assert len(reasons) == 2 and all("not found" in r for r in reasons)
    assert "list_attr_celeba.txt:7" in reasons[0]  # 000005.jpg is on line 7 (count, header, 4 rows before)


def test_unlisted_image_on_disk_is_reported(official):
    _images(official / "Img" / "img_align_celeba", ["999999.jpg"])
    data = load_celeba(official)
    assert len(data) == 6
    assert any("999999.jpg" in s.source and "no row" in s.reason for s in data.skipped)


def test_no_count_line_lf_warns_and_reads(tmp_path, fixtures_dir):
    root = tmp_path / "c"
    shutil.copytree(fixtures_dir / "readers" / "celeba" / "no_count_lf", root)
    _images(root / "img_align_celeba")
    with pytest.warns(UserWarning, match="no count line"):
        data = load_celeba(root)
    assert len(data) == 6 and data.records[5].split == "test"
    assert "landmarks" not in data.records[0].meta


def test_count_disagreeing_with_rows_warns(official):
    path = official / "Anno" / "list_attr_celeba.txt"
    path.write_bytes(path.read_bytes().replace(b"6\r\n", b"821\r\n", 1))  # a real truncated copy says 821
    with pytest.warns(UserWarning, match="says 821 rows but the file has 6"):
        names, values = read_celeba_attributes(path)
    assert len(names) == 40 and len(values) == 6


def test_kaggle_csv_variant(tmp_path, fixtures_dir):
    root = tmp_path / "kaggle"
    shutil.copytree(fixtures_dir / "readers" / "celeba" / "kaggle", root)
    _images(root / "img_align_celeba" / "img_align_celeba")  # the archive's doubled folder
    with pytest.warns(UserWarning, match="identity_CelebA.txt not found"):
        data = load_celeba(root)
    assert len(data) == 6 and all(r.identity is None for r in data.records)
    assert data.records[1].meta["landmarks"][0] == [69, 110]
    assert data.records[1].meta["bbox_wild"] == [72, 94, 221, 306]
    assert data.records[0].labels == load_celeba_labels_from_txt(fixtures_dir)


def load_celeba_labels_from_txt(fixtures_dir):
    names, values = read_celeba_attributes(fixtures_dir / "readers/celeba/official/Anno/list_attr_celeba.txt")
    return dict(zip(names, values["000001.jpg"]))


def test_landmark_and_box_files_alone(fixtures_dir):
    base = fixtures_dir / "readers" / "celeba"
    txt = read_celeba_landmarks(base / "official/Anno/list_landmarks_align_celeba.txt")
    csv = read_celeba_landmarks(base / "kaggle/list_landmarks_align_celeba.csv")
    assert txt == csv and len(txt) == 6
    assert read_celeba_bboxes(base / "official/Anno/list_bbox_celeba.txt") == read_celeba_bboxes(
        base / "kaggle/list_bbox_celeba.csv"
    )
    assert read_celeba_partition(base / "kaggle/list_eval_partition.csv")["000005.jpg"] == "val"


def test_html_label_file_is_refused(tmp_path, fixtures_dir):
    root = tmp_path / "h"
    shutil.copytree(fixtures_dir / "readers" / "celeba" / "html", root)
    _images(root / "img_align_celeba")
    with pytest.raises(LabelFileError, match="HTML page") as info:
        load_celeba(root)
    assert info.value.path.name == "list_attr_celeba.txt"


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="list_attr_celeba"):
        load_celeba(tmp_path)


# --------------------------------------------------------------------------- bad label data


def _rewrite(path, old: bytes, new: bytes):
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


def test_wrong_column_count_names_file_and_line(official):
    path = official / "Anno" / "list_attr_celeba.txt"
    _rewrite(path, b"000003.jpg -1", b"000003.jpg")
    with pytest.raises(LabelFileError) as info:
        load_celeba(official)
    assert str(info.value).startswith(f"{path}:5: expected 41 fields")


def test_unparseable_value_names_file_line_and_attribute(official):
    path = official / "Anno" / "list_attr_celeba.txt"
    _rewrite(path, b"000002.jpg -1", b"000002.jpg  x")
    with pytest.raises(LabelFileError, match=r"list_attr_celeba.txt:4: unparseable .*'x' for '5_o_Clock_Shadow'"):
        load_celeba(official)


def test_image_missing_from_partition_file_is_an_error(official):
    path = official / "Eval" / "list_eval_partition.txt"
    _rewrite(path, b"000004.jpg 0\r\n", b"")
    with pytest.raises(
        LabelFileError, match=r"list_attr_celeba.txt:6: 000004.jpg has no row in list_eval_partition.txt"
    ):
        load_celeba(official)


def test_unknown_image_in_identity_file_is_an_error(official):
    path = official / "Anno" / "identity_CelebA.txt"
    path.write_bytes(path.read_bytes() + b"123456.jpg 17\r\n")
    with pytest.raises(LabelFileError, match=r"identity_CelebA.txt:7: 123456.jpg is not in list_attr_celeba.txt"):
        load_celeba(official)


def test_bad_partition_value_and_duplicate_row(official):
    path = official / "Eval" / "list_eval_partition.txt"
    _rewrite(path, b"000005.jpg 1", b"000005.jpg 3")
    with pytest.raises(LabelFileError, match=r"list_eval_partition.txt:5: unparseable partition"):
        load_celeba(official)
    _rewrite(path, b"000005.jpg 3", b"000001.jpg 1")
    with pytest.raises(
        LabelFileError, match=r"list_eval_partition.txt:5: 000001.jpg is listed twice \(first at line 1\)"
    ):
        load_celeba(official)


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
def test_real_celeba_subset(shared_data):
    data = load_celeba(shared_data / "celeba")
    assert len(data) == 4560 and not data.skipped
    assert data.schema.names == list(CELEBA_ATTRIBUTES)
    assert len(data.identities()) == 152
    assert data.split_counts() == {"train": 3480, "val": 660, "test": 420}
    assert len(data.subset("test").identities()) == 14
    male = sum(r.labels["Male"] for r in data.records) / len(data)
    assert 0.27 < male < 0.31  # the README: the subset is 29% male
    assert data.records[0].path.is_file()


@pytest.mark.real_data
def test_real_full_attribute_file_parses_quickly(shared_data):
    start = time.perf_counter()
    names, values = read_celeba_attributes(shared_data / "celeba_full_labels" / "list_attr_celeba.txt")
    elapsed = time.perf_counter() - start
    assert names == list(CELEBA_ATTRIBUTES) and len(values) == 202_599
    # 000001.jpg -1  1  1 -1 ... (first row of the official file)
    assert values["000001.jpg"][:4] == [0, 1, 1, 0]
    male = sum(v[names.index("Male")] for v in values.values()) / len(values)
    assert 0.40 < male < 0.44  # about 42% male in the full set
    assert elapsed < 5.0, f"parsing took {elapsed:.1f}s"


@pytest.mark.real_data
def test_real_full_labels_against_subset_images(shared_data, tmp_path):
    """The full label files with only the subset's images: every absent image is a skip."""
    root = tmp_path / "mixed"
    root.mkdir()
    for name in ("list_attr_celeba.txt", "identity_CelebA.txt"):
        (root / name).symlink_to(shared_data / "celeba_full_labels" / name)
    lines = [f"{i:06d}.jpg {0 if i <= 162770 else 1 if i <= 182637 else 2}" for i in range(1, 202_600)]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    (root / "img_align_celeba").symlink_to(shared_data / "celeba" / "img_align_celeba")
    data = load_celeba(root)
    assert len(data) == 4560 and len(data.skipped) == 202_599 - 4560
    assert all("not found" in s.reason for s in data.skipped[:5])
