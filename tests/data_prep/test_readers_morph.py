"""MORPH II reader: the metadata CSV (pandas-written, inconsistent padding) and AGR lists."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from data_prep.datasets import LabelFileError, load_morph, read_morph_labels
from data_prep.datasets.splits import split_leaks


@pytest.fixture()
def morph_root(tmp_path, fixtures_dir):
    root = tmp_path / "morph"
    shutil.copytree(fixtures_dir / "readers" / "morph", root)
    album = root / "Album2"
    album.mkdir()
    photos = {r.photo for f in ("whole_test.csv", "S1.txt") for r in read_morph_labels(root / f)}
    for photo in sorted(photos):
        if photo.endswith("063874_6M46.JPG"):
            name = "063874_06M46.jpg"  # on disk with other padding and case: still found
        elif photo.endswith("100259_2M38.JPG"):
            continue  # missing image -> skipped
        else:
            name = photo.split("/")[-1]
        Image.new("RGB", (32, 32)).save(album / name, format="JPEG")
    return root


def test_csv_rows_and_quirks(morph_root):
    rows = read_morph_labels(morph_root / "whole_test.csv")
    assert len(rows) == 10
    first = rows[0]
    assert (first.line, first.photo, first.identity) == (2, "Album2/320711_00M34.JPG", "320711")
    assert first.labels == {"Age": 34.0, "Male": 1, "Race": 0}
    assert first.meta == {"picture_num": "0", "dob": "1971-03-13", "doa": "2005-10-12", "age_diff": None}
    assert rows[1].meta["age_diff"] == 2.0 and rows[1].labels["Race"] == 1
    assert rows[3].identity == "19066"  # unpadded id_num
    assert rows[8].labels["Male"] == 0  # an F row


def test_load_csv_resolves_padding_and_skips_missing(morph_root):
    data = load_morph(morph_root, labels="whole_test.csv")
    assert len(data) == 9
    names = {r.path.name for r in data.records}
    assert "063874_06M46.jpg" in names
    assert len(data.skipped) == 1 and "whole_test.csv:9" in str(data.skipped[0])
    assert data.schema["Race"].classes == ("Black", "White", "Hispanic", "Asian", "Other")
    assert not split_leaks(data.records)
    assert {r.split for r in data.records} <= {"train", "val", "test"}


def test_agr_lists_as_official_split(morph_root):
    assert (morph_root / "S1.txt").read_bytes().count(b"\r\n") == 6
    data = load_morph(morph_root, split_files={"train": "S1.txt", "test": "S2.txt"})
    assert data.split_counts() == {"train": 6, "test": 5}
    s1 = [r for r in data.records if r.split == "train"][0]
    assert s1.identity == "92796" and s1.labels == {"Age": 43.0, "Male": 1, "Race": 0}
    s2 = {r.identity: r for r in data.records if r.split == "test"}
    assert s2["318317"].labels["Race"] == 1  # W -> code 1 in the list
    only_test = load_morph(morph_root, split="test", split_files={"train": "S1.txt", "test": "S2.txt"})
    assert len(only_test) == 5


def test_default_label_file_and_errors(morph_root):
    # Two CSVs in the root would be ambiguous; one is picked only when it is unique.
    data = load_morph(morph_root)
    assert len(data) == 9
    path = morph_root / "whole_test.csv"
    text = path.read_text()
    path.write_text(text.replace(",B,M,,70,", ",X,M,,70,"))
    with pytest.raises(LabelFileError, match=r"whole_test.csv:5: unknown race 'X'"):
        load_morph(morph_root)
    path.write_text(text.replace("03/13/1971", "13/03/1971"))
    with pytest.raises(LabelFileError, match=r"whole_test.csv:2: unparseable dob '13/03/1971'"):
        load_morph(morph_root)
    path.write_text(text.replace(",,34,,,Album2/320711", ",,34,,Album2/320711"))
    with pytest.raises(LabelFileError, match=r"whole_test.csv:2: expected 11 comma-separated fields, found 10"):
        load_morph(morph_root)
    s1 = morph_root / "S1.txt"
    s1.write_bytes(s1.read_bytes().replace(b"43 0 0", b"43 0 7"))
    with pytest.raises(LabelFileError, match=r"S1.txt:1: unknown gender code '7'"):
        read_morph_labels(s1)
    s1.write_bytes(s1.read_bytes().replace(b"43 0 7", b"forty 0 0"))
    with pytest.raises(LabelFileError, match=r"S1.txt:1: unparseable age 'forty'"):
        read_morph_labels(s1)
