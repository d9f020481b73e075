"""Adience reader on real excerpts of fold files: CRLF and LF, None ages, bare integers,
off-grid ranges, empty/u gender, and truncated last lines."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from data_prep.datasets import (
    ADIENCE_AGE_CLASSES,
    DatasetOptionError,
    LabelFileError,
    adience_age_group,
    load_adience,
    read_adience_fold,
)


def _face_names(root):
    names = []
    for fold in range(4):
        rows, _ = read_adience_fold(root / f"fold_{fold}_data.txt")
        names.extend((r.user_id, r.face_id, r.original_image) for r in rows)
    return names


@pytest.fixture()
def adience_root(tmp_path, fixtures_dir):
    root = tmp_path / "adience"
    shutil.copytree(fixtures_dir / "readers" / "adience", root)
    for i, (user, face, original) in enumerate(_face_names(root)):
        if i == 0:
            continue  # one image missing on disk
        folder = root / "faces" / user
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32)).save(folder / f"coarse_tilt_aligned_face.{face}.{original}", format="JPEG")
    return root


def test_fixture_byte_conventions(fixtures_dir):
    base = fixtures_dir / "readers" / "adience"
    assert b"\r\n" in (base / "fold_0_data.txt").read_bytes()
    assert b"\r\n" not in (base / "fold_1_data.txt").read_bytes()
    for fold in range(4):
        assert not (base / f"fold_{fold}_data.txt").read_bytes().endswith(b"\n"), "last line has no newline"


def test_age_rule():
    assert adience_age_group("(25, 32)") == ADIENCE_AGE_CLASSES.index("25-32")
    assert adience_age_group("None") is None
    expected = {
        "2": "0-2", "3": "0-2", "13": "8-12", "22": "15-20", "23": "25-32", "34": "25-32", "35": "25-32",
        "36": "38-43", "42": "38-43", "45": "38-43", "55": "48-53", "56": "48-53", "57": "60-100", "58": "60-100",
        "(38, 48)": "38-43", "(38, 42)": "38-43", "(8, 23)": "15-20", "(27, 32)": "25-32",
    }  # fmt: skip
    for raw, group in expected.items():
        assert ADIENCE_AGE_CLASSES[adience_age_group(raw)] == group, raw
    with pytest.raises(ValueError):
        adience_age_group("adult")


def test_quirk_rows(adience_root):
    rows, truncated = read_adience_fold(adience_root / "fold_0_data.txt")
    assert len(rows) == 11 and not truncated
    by_line = {r.line: r for r in rows}
    assert by_line[8].age_group is None and by_line[8].male is None  # None age, empty gender
    assert ADIENCE_AGE_CLASSES[by_line[9].age_group] == "38-43" and by_line[9].male == 1  # (38, 48)
    assert ADIENCE_AGE_CLASSES[by_line[10].age_group] == "25-32" and by_line[10].male == 0  # bare 35
    assert by_line[12].male is None and ADIENCE_AGE_CLASSES[by_line[12].age_group] == "60-100"
    assert by_line[2].meta["bbox"] == [0, 414, 1086, 1383] and by_line[2].meta["tilt_ang"] == -115
    rows1, _ = read_adience_fold(adience_root / "fold_1_data.txt")  # LF copy
    assert {r.meta["age_raw"] for r in rows1} >= {"45", "(38, 42)", "(8, 23)", "(27, 32)", "None"}
    none_female = [r for r in rows1 if r.meta["age_raw"] == "None" and r.male == 0]
    assert len(none_female) == 1


def test_truncated_last_lines_are_skipped_with_file_and_line(adience_root):
    rows2, truncated2 = read_adience_fold(adience_root / "fold_2_data.txt")
    assert len(rows2) == 3 and len(truncated2) == 1
    assert str(truncated2[0]).startswith(f"{adience_root / 'fold_2_data.txt'}:5: truncated last line")
    _, truncated3 = read_adience_fold(adience_root / "fold_3_data.txt")
    assert truncated3[0].line == 4 and "truncated" in truncated3[0].reason


def test_malformed_middle_row_raises(adience_root):
    path = adience_root / "fold_1_data.txt"
    lines = path.read_text().split("\n")
    lines[2] = lines[2].replace("\tm\t", "\tx\t", 1) if "\tm\t" in lines[2] else lines[2].replace("\tf\t", "\tx\t", 1)
    path.write_text("\n".join(lines))
    with pytest.raises(LabelFileError, match=r"fold_1_data.txt:3: unknown gender 'x'"):
        read_adience_fold(path)
    lines[2] = "\t".join(lines[2].split("\t")[:6])
    path.write_text("\n".join(lines))
    with pytest.raises(LabelFileError, match=r"fold_1_data.txt:3: expected 12 tab-separated fields, found 6"):
        read_adience_fold(path)


def test_load_folds_and_protocol(adience_root):
    data = load_adience(adience_root)
    total = 11 + 11 + 3 + 2
    assert len(data) == total - 1
    assert all(r.split is None for r in data.records)
    assert sorted({r.meta["fold"] for r in data.records}) == [0, 1, 2, 3]
    first = data.records[0]
    assert first.identity == f"{first.path.parent.name}/{first.path.name.split('.')[1]}"
    assert first.path.name.startswith("coarse_tilt_aligned_face.")
    missing = [s for s in data.skipped if "not found" in s.reason]
    truncated = [s for s in data.skipped if "truncated" in s.reason]
    assert len(missing) == 1 and "fold_0_data.txt:2" in str(missing[0]) and len(truncated) == 2
    assert data.schema["Age_group"].kind.value == "ordinal" and len(data.schema["Age_group"].classes) == 8
    protocol = load_adience(adience_root, test_fold=1, val_fold=2)
    assert protocol.split_counts() == {"train": 10 + 2, "test": 11, "val": 3}
    assert len(load_adience(adience_root, split="test", test_fold=1)) == 11
    with pytest.raises(DatasetOptionError, match="test_fold"):
        load_adience(adience_root, split="test")
