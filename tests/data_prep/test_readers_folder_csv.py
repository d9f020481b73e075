"""Generic folder + CSV reader: schema inference, YAML sidecar (the LBS-style set), errors."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from data_prep.datasets import LabelFileError, LabelSchema, Task, TaskKind, infer_schema, load_folder_csv
from data_prep.datasets.splits import split_leaks


def _copy(tmp_path, fixtures_dir, name):
    root = tmp_path / name
    shutil.copytree(fixtures_dir / "readers" / "folder_csv" / name, root)
    return root


def _images(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32)).save(path)


BASIC = ["a/p1_1.png", "a/p1_2.png", "a/p2_1.png", "b/p3_1.png", "b/p4_1.png", "b/p5_1.png"]


def test_inferred_schema(tmp_path, fixtures_dir):
    root = _copy(tmp_path, fixtures_dir, "basic")
    _images(root, BASIC[:-1])
    data = load_folder_csv(root)
    kinds = {t.name: t.kind for t in data.schema}
    assert kinds == {
        "Smiling": TaskKind.BINARY, "Age": TaskKind.REGRESSION, "Hair": TaskKind.CATEGORICAL, "age_group": TaskKind.ORDINAL,
    }  # fmt: skip
    assert data.schema["Age"].value_range == (8.0, 61.0)
    assert data.schema["Hair"].classes == ("black", "blond", "brown", "gray")
    assert data.schema["age_group"].classes == ("0-19", "20-29", "30-44", "45-59", "60+")
    by_name = {r.path.name: r for r in data.records}
    assert by_name["p3_1.png"].labels == {"Age": 61.0, "Hair": 3, "age_group": 4}, "empty Smiling cell: no label"
    assert by_name["p1_1.png"].identity == "p1"
    assert len(data) == 5 and "b/p5_1.png" in str(data.skipped[0]) and "labels.csv:7" in str(data.skipped[0])
    assert not split_leaks(data.records)
    assert {r.split for r in data.records if r.identity == "p1"} in ({"train"}, {"val"}, {"test"})


def test_lbs_style_sidecar(tmp_path, fixtures_dir):
    root = _copy(tmp_path, fixtures_dir, "lbs")
    _images(root, [f"img_{i:03d}.jpg" for i in range(6)])
    data = load_folder_csv(root)
    assert len(data.schema.of_kind("categorical")) == 9
    age = data.schema["Age_group"]
    assert age.kind is TaskKind.ORDINAL and age.classes == ("0-19", "20-29", "30-44", "45-59", "60+")
    assert data.schema["eyewear"].classes == ("none", "glasses", "sunglasses"), "declared class order is kept"
    assert data.split_counts() == {"train": 3, "val": 1, "test": 2}
    record = data.records[5]
    assert record.labels["Age_group"] == 0  # "0-19" (5 % 5)
    assert record.labels["hair_color"] == data.schema["hair_color"].classes.index("brown")
    for r in data.records:
        data.schema.validate(r.labels)


def test_schema_argument_and_bad_values(tmp_path, fixtures_dir):
    root = _copy(tmp_path, fixtures_dir, "basic")
    _images(root, BASIC)
    schema = LabelSchema(
        (Task("Smiling", TaskKind.BINARY), Task("Hair", TaskKind.CATEGORICAL, classes=("black", "blond")))
    )
    with pytest.raises(LabelFileError, match=r"labels.csv:5: column 'Hair': 'gray' is neither a class"):
        load_folder_csv(root, schema=schema)
    data = load_folder_csv(root, schema={"tasks": [{"name": "Smiling", "kind": "binary"}]})
    assert data.schema.names == ["Smiling"]
    csv = root / "labels.csv"
    csv.write_text(csv.read_text().replace("a/p2_1.png,p2,1,", "a/p2_1.png,p2,maybe,"))
    with pytest.raises(LabelFileError, match=r"labels.csv:4: column 'Smiling': 'maybe' is not a binary value"):
        load_folder_csv(root, schema=schema)
    csv.write_text("path,Smiling\nx.png,1,2\n")
    with pytest.raises(LabelFileError, match=r"labels.csv:2: expected 2 fields"):
        load_folder_csv(root)
    csv.write_text("path,split,Smiling\nx.png,train,1\ny.png,holdout,0\n")
    with pytest.raises(LabelFileError, match=r"labels.csv:3: unknown split 'holdout'"):
        load_folder_csv(root)
    csv.write_text("image_id,Smiling\nx.png,1\n")
    with pytest.raises(LabelFileError, match=r"labels.csv:1: no path column"):
        load_folder_csv(root)


def test_infer_refuses_free_text():
    with pytest.raises(ValueError, match="cannot infer"):
        infer_schema({"caption": [f"text {i}" for i in range(30)]})
    assert infer_schema({"x": ["-1", "1", ""]})["x"].kind is TaskKind.BINARY
