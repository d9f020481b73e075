"""UTKFace reader: labels from file names, malformed names skipped, duplicate groups."""

from __future__ import annotations

import pytest
from PIL import Image

from data_prep.datasets import LabelFileError, deduplicate, load_utkface, parse_utkface_name
from data_prep.datasets.splits import split_leaks

NAMES = [
    "25_0_2_20170116174525125.jpg.chip.jpg",
    "25_1_0_20170116174525126.jpg.chip.jpg",
    "1_0_4_20161219154215242.jpg.chip.jpg",
    "116_1_3_20170120134744096.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",  # real malformed name: no race field
    "61_3_20170109150557335.jpg.chip.jpg",  # real malformed name: gender 3
    "30_0_1_20170117154013341.jpg.chip.jpg",
    "31_0_1_20170117154013342.jpg.chip.jpg",
]


@pytest.fixture()
def utk_root(tmp_path):
    folder = tmp_path / "utk" / "crop_part1"
    folder.mkdir(parents=True)
    for name in NAMES:
        Image.new("RGB", (32, 32), (90, 60, 30)).save(folder / name, format="JPEG")
    (folder / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "utk" / "duplicate_groups.csv").write_bytes(
        b"group,image,age\r\n"
        b"0,30_0_1_20170117154013341.jpg.chip.jpg,30\r\n0,31_0_1_20170117154013342.jpg.chip.jpg,31\r\n"
        b"1,99_0_0_20170101000000000.jpg.chip.jpg,99\r\n"  # not in this folder: ignored
    )
    return tmp_path / "utk"


def test_labels_from_names_and_malformed_skipped(utk_root):
    data = load_utkface(utk_root)
    assert len(data) == 6 and len(data.skipped) == 2
    by_name = {r.path.name: r for r in data.records}
    first = by_name["25_0_2_20170116174525125.jpg.chip.jpg"]
    assert first.labels == {"Age": 25.0, "Male": 1, "Race": 2} and first.identity is None
    assert by_name["25_1_0_20170116174525126.jpg.chip.jpg"].labels["Male"] == 0
    assert by_name["116_1_3_20170120134744096.jpg.chip.jpg"].labels["Age"] == 116.0
    assert data.schema["Race"].classes == ("White", "Black", "Asian", "Indian", "Others")
    reasons = {s.source.rsplit("/", 1)[-1]: s.reason for s in data.skipped}
    assert "expected 4" in reasons["61_1_20170109142408075.jpg.chip.jpg"]
    assert "gender '3'" in reasons["61_3_20170109150557335.jpg.chip.jpg"]
    data.schema.validate(first.labels)


def test_duplicate_groups_dedupe_and_split(utk_root):
    data = load_utkface(utk_root)
    grouped = [r for r in data.records if "duplicate_group" in r.meta]
    assert len(grouped) == 2 and {r.meta["duplicate_group"] for r in grouped} == {0}
    assert len({r.split for r in grouped}) == 1, "duplicates must share a split"
    assert not split_leaks(data.records, "duplicate_group")
    assert len(deduplicate(data.records)) == 5
    # The two copies disagree on age (30 vs 31): drop_conflicting removes both.
    assert len(deduplicate(data.records, drop_conflicting=True)) == 4


def test_parse_name_errors():
    assert parse_utkface_name("9_1_4_20170103213057382.jpg.chip.jpg") == (9, 1, 4, "20170103213057382")
    assert parse_utkface_name("9_1_4_20170103213057382.jpg")[0] == 9  # in-the-wild naming
    for bad, why in [("117_0_0_1.jpg.chip.jpg", "age"), ("20_0_5_1.jpg.chip.jpg", "race"), ("x.png", "not a UTKFace")]:
        with pytest.raises(ValueError, match=why):
            parse_utkface_name(bad)


def test_bad_duplicate_file(utk_root):
    (utk_root / "duplicate_groups.csv").write_text("group,image,age\nzero,a.jpg,3\n")
    with pytest.raises(LabelFileError, match=r"duplicate_groups.csv:2: unparseable group number 'zero'"):
        load_utkface(utk_root)


@pytest.mark.real_data
def test_real_utkface(shared_data):
    data = load_utkface(shared_data / "utkface")
    assert len(data) == 7222 and len(data.skipped) == 2
    assert all("malformed" in s.reason for s in data.skipped)
    ages = [r.labels["Age"] for r in data.records]
    assert 0 < min(ages) and max(ages) <= 116
    assert {r.labels["Race"] for r in data.records} == {0, 1, 2, 3, 4}
    assert {r.labels["Male"] for r in data.records} == {0, 1}
    grouped = [r for r in data.records if "duplicate_group" in r.meta]
    assert len(grouped) == 146
    assert not split_leaks(data.records, "duplicate_group")
    deduped = deduplicate(data.records)
    assert len(deduped) == len(data) - (len(grouped) - len({r.meta["duplicate_group"] for r in grouped}))
