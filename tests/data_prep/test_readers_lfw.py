"""LFW reader: verified gender lists, Columbia attributes mapped to CelebA names, LFWA text,
and the real LFW-a copy."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from data_prep.datasets import COLUMBIA_TO_CELEBA, LabelFileError, load_lfw, read_columbia_attributes
from data_prep.datasets.splits import split_leaks

IMAGES = [
    "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
    "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
    "Allison_Searing/Allison_Searing_0001.jpg",
    "Amelie_Mauresmo/Amelie_Mauresmo_0001.jpg",
    "Amelie_Mauresmo/Amelie_Mauresmo_0002.jpg",
    "Unlisted_Person/Unlisted_Person_0001.jpg",
]


@pytest.fixture()
def lfw_root(tmp_path, fixtures_dir):
    root = tmp_path / "lfw"
    shutil.copytree(fixtures_dir / "readers" / "lfw", root)
    for rel in IMAGES:
        path = root / "lfw-a" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (32, 32), 128).save(path)  # LFW-a is grayscale
    return root


def _by_name(data):
    return {r.path.name: r for r in data.records}


def test_gender_lists_conflicts_and_unlisted(lfw_root):
    assert (lfw_root / "male_names.txt").read_bytes().count(b"\r\n") == 5
    data = load_lfw(lfw_root)
    records = _by_name(data)
    assert "Allison_Searing_0001.jpg" not in records, "an image in both lists must be dropped"
    assert len(data) == len(IMAGES) - 1
    assert records["Aaron_Eckhart_0001.jpg"].labels["Male"] == 1
    assert records["Amelie_Mauresmo_0002.jpg"].labels["Male"] == 0
    assert "Male" not in records["Unlisted_Person_0001.jpg"].labels
    assert records["Aaron_Peirsol_0002.jpg"].identity == "Aaron_Peirsol"
    reasons = [str(s) for s in data.skipped]
    assert any("Allison_Searing_0001.jpg is in both" in r and "male_names.txt:4" in r for r in reasons)
    # Zydrunas_Ilgauskas_0001.jpg (male list line 5) and Ghost_Person (Columbia) have no image.
    assert any("male_names.txt:5" in r and "not found" in r for r in reasons)
    assert any("lfw_attributes.txt:6" in r and "Ghost_Person_0001.jpg" in r for r in reasons)
    item = data[0]
    assert item["image"].shape == (3, 32, 32)


def test_columbia_mapping_keeps_verified_gender(lfw_root):
    data = load_lfw(lfw_root)
    names = data.schema.names
    assert names[0] == "Male" and "Male_columbia" in names and "Young" in names and "Attractive" in names
    assert set(COLUMBIA_TO_CELEBA) | {"Young", "Attractive", "Male"} == set(names)
    records = _by_name(data)
    first = records["Amelie_Mauresmo_0001.jpg"].labels
    # Columbia calls her male (score 1.2); the verified list says female and wins.
    assert first["Male"] == 0 and first["Male_columbia"] == 1
    assert first["Smiling"] == 1 and first["Eyeglasses"] == 0
    assert first["Young"] == 1  # Youth 1.1 beats Middle Aged -0.5 / Senior -1.5
    assert first["Attractive"] == 1  # female -> Attractive Woman 0.7
    second = records["Amelie_Mauresmo_0002.jpg"].labels
    assert second["Young"] == 0 and second["Attractive"] == 0 and second["Eyeglasses"] == 1
    peirsol = records["Aaron_Peirsol_0001.jpg"].labels
    assert peirsol["Smiling"] == 0, "a score of exactly 0 is not present"
    assert peirsol["Attractive"] == 1  # male -> Attractive Man 0.9
    columns, scores, _ = read_columbia_attributes(lfw_root / "lfw_attributes.txt")
    raw = records["Amelie_Mauresmo_0001.jpg"].meta["columbia_scores"]
    assert len(raw) == 73 and raw["Male"] == 1.2
    assert raw["Sunglasses"] == scores["Amelie_Mauresmo_0001.jpg"][columns.index("Sunglasses")]
    assert "Smiling" not in records["Aaron_Eckhart_0001.jpg"].labels  # no Columbia row


def test_lfwa_text_file_with_windows_paths(lfw_root, fixtures_dir):
    shutil.copy(fixtures_dir / "readers" / "lfwa" / "lfw_att_40.txt", lfw_root)
    data = load_lfw(lfw_root)  # auto: LFWA wins over Columbia when present
    assert "Male_lfwa" in data.schema.names and "Male_columbia" not in data.schema.names
    assert len(data.schema) == 41
    records = _by_name(data)
    assert set(records["Aaron_Eckhart_0001.jpg"].labels) == set(data.schema.names)
    assert records["Aaron_Eckhart_0001.jpg"].labels["5_o_Clock_Shadow"] == 0  # "-1" in the file
    assert records["Aaron_Peirsol_0001.jpg"].labels["5_o_Clock_Shadow"] == 1
    assert any("lfw_att_40.txt:6" in str(s) and "Zydrunas" in str(s) for s in data.skipped)
    columbia = load_lfw(lfw_root, attributes="columbia")
    assert "Male_columbia" in columbia.schema.names
    assert load_lfw(lfw_root, attributes="none").schema.names == ["Male"]


def test_split_is_identity_disjoint_and_seeded(lfw_root):
    a = load_lfw(lfw_root, split_seed=3)
    b = load_lfw(lfw_root, split_seed=3)
    assert [r.split for r in a.records] == [r.split for r in b.records]
    assert not split_leaks(a.records)


def test_bad_columbia_row_names_file_and_line(lfw_root):
    path = lfw_root / "lfw_attributes.txt"
    lines = path.read_text().split("\n")
    fields = lines[3].split("\t")
    lines[3] = "\t".join(fields[:10] + ["abc"] + fields[11:])
    path.write_text("\n".join(lines))
    with pytest.raises(LabelFileError, match=r"lfw_attributes.txt:4: unparseable score 'abc'"):
        load_lfw(lfw_root)
    lines[3] = "\t".join(fields[:-1])
    path.write_text("\n".join(lines))
    with pytest.raises(LabelFileError, match=r"lfw_attributes.txt:4: expected 75 tab-separated fields"):
        read_columbia_attributes(path)


def test_bad_gender_list_line(lfw_root):
    path = lfw_root / "female_names.txt"
    path.write_bytes(path.read_bytes() + b"not a file name\r\n")
    with pytest.raises(LabelFileError, match=r"female_names.txt:4: expected an LFW file name"):
        load_lfw(lfw_root)


@pytest.mark.real_data
def test_real_lfw_a(shared_data):
    data = load_lfw(shared_data / "lfw")
    conflicts = [s for s in data.skipped if "in both" in s.reason]
    assert len(conflicts) == 4 and len(data.skipped) == 4
    assert len(data) + len(conflicts) == 10_375
    people = data.identities() | {s.reason.split("_0001.jpg")[0] for s in conflicts}
    assert len(people) == 5170
    male = sum(1 for r in data.records if r.labels.get("Male") == 1)
    female = sum(1 for r in data.records if r.labels.get("Male") == 0)
    assert (male, female) == (7822 - 4, 2554 - 4)
    assert len(data) - male - female == 3, "3 images are in neither list"
    columbia = [r for r in data.records if "Male_columbia" in r.labels]
    assert len(columbia) == 1110
    agree = sum(r.labels["Male"] == r.labels["Male_columbia"] for r in columbia if "Male" in r.labels)
    assert 0.92 < agree / len(columbia) < 0.95  # README: 93.5% on these 1,110 rows
    columns, scores, _ = read_columbia_attributes(shared_data / "lfw" / "lfw_attributes.txt")
    assert len(columns) == 73 and len(scores) == 1110
    assert all(COLUMBIA_TO_CELEBA[t] in columns for t in COLUMBIA_TO_CELEBA)
    assert not split_leaks(data.records)
