"""Identity-disjoint splits: no leaks, seeded determinism, fractions, group keys, overrides."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from data_prep.datasets import FaceDataset, LabelSchema, SampleRecord, SplitError
from data_prep.datasets.splits import (
    ensure_splits,
    identity_disjoint_split,
    kfold_split,
    resplit_by_identity,
    split_groups,
    split_leaks,
)


def _records(people=200, per_person=(1, 9), seed=0):
    import random

    rng = random.Random(seed)
    records = []
    for p in range(people):
        for i in range(rng.randint(*per_person)):
            records.append(SampleRecord(Path(f"/x/p{p}_{i}.jpg"), {}, f"p{p}"))
    return records


def test_identity_disjoint_and_fractions():
    records = _records()
    split = identity_disjoint_split(records, (0.7, 0.1, 0.2), seed=1)
    assert not split_leaks(split)
    counts = Counter(r.split for r in split)
    for name, fraction in zip(("train", "val", "test"), (0.7, 0.1, 0.2)):
        assert abs(counts[name] / len(split) - fraction) < 0.03, counts
    assert [r.path for r in split] == [r.path for r in records], "order and records are kept"


def test_deterministic_per_seed_and_order_independent():
    records = _records()
    a = identity_disjoint_split(records, seed=5)
    b = identity_disjoint_split(list(reversed(records)), seed=5)
    assert {r.path: r.split for r in a} == {r.path: r.split for r in b}
    c = identity_disjoint_split(records, seed=6)
    assert [r.split for r in a] != [r.split for r in c]


def test_group_key_and_files_without_identity():
    records = [SampleRecord(Path(f"/u/{i}.jpg"), {}, None, meta={"dup": i // 3} if i < 30 else {}) for i in range(300)]
    split = identity_disjoint_split(records, test_fraction=0.3, seed=2, group_key="dup")
    assert not split_leaks(split, "dup")
    assert {r.split for r in split} == {"train", "test"}
    by_group = {}
    for r in split:
        if "dup" in r.meta:
            by_group.setdefault(r.meta["dup"], set()).add(r.split)
    assert all(len(s) == 1 for s in by_group.values())
    # A callable group key works the same way.
    split2 = identity_disjoint_split(records, test_fraction=0.3, seed=2, group_key=lambda r: r.meta.get("dup"))
    assert [r.split for r in split2] == [r.split for r in split]


def test_identity_and_group_are_merged():
    # p1 and p2 share a duplicate group: all of p1 and p2 must land together.
    records = [
        SampleRecord(Path("/a.jpg"), {}, "p1", meta={"g": 1}),
        SampleRecord(Path("/b.jpg"), {}, "p1"),
        SampleRecord(Path("/c.jpg"), {}, "p2", meta={"g": 1}),
        SampleRecord(Path("/d.jpg"), {}, "p2"),
    ]
    assert len(set(split_groups(records, "g"))) == 1
    for seed in range(10):
        assert len({r.split for r in identity_disjoint_split(records, seed=seed, group_key="g")}) == 1


def test_small_datasets_fill_every_split():
    records = [SampleRecord(Path(f"/{i}.jpg"), {}, f"p{i}") for i in range(3)]
    assert {r.split for r in identity_disjoint_split(records, (0.8, 0.1, 0.1))} == {"train", "val", "test"}


def test_resplit_overrides_official_split_by_people():
    records = [r.with_split("train") for r in _records(people=150)]
    data = FaceDataset("x", records, LabelSchema(()))
    assert ensure_splits(data) is data, "an official split is kept"
    resplit = resplit_by_identity(data, test_fraction=0.2, seed=0)
    test_people = {r.identity for r in resplit.records if r.split == "test"}
    assert len(test_people) == 30 and not split_leaks(resplit.records)
    derived = ensure_splits(FaceDataset("y", [r.with_split(None) for r in records], LabelSchema(())))
    assert all(r.split is not None for r in derived.records)


def test_kfold_tests_every_person_exactly_once_and_keeps_people_whole():
    records = _records(people=103)
    tested = Counter()
    for fold in range(5):
        split = kfold_split(records, 5, fold, val_fraction=0.1, seed=3)
        assert not split_leaks(split) and [r.path for r in split] == [r.path for r in records]
        people = {s: {r.identity for r in split if r.split == s} for s in ("train", "val", "test")}
        assert len(people["test"]) in (20, 21)  # 103 people dealt into 5 folds
        assert len(people["val"]) == round(0.1 * (103 - len(people["test"])))
        tested.update(people["test"])
    assert len(tested) == 103 and set(tested.values()) == {1}
    shuffled = list(reversed(records))
    assert ({r.path: r.split for r in kfold_split(shuffled, 5, 2, seed=3)}
            == {r.path: r.split for r in kfold_split(records, 5, 2, seed=3)}), "order-independent"
    assert kfold_split(records, 5, 2, seed=3) != kfold_split(records, 5, 2, seed=4)
    with pytest.raises(SplitError, match="folds >= 2"):
        kfold_split(records, 5, 5)
    with pytest.raises(SplitError, match="at least 5 people"):
        kfold_split(_records(people=4), 5, 0)


def test_a_source_with_folds_is_split_by_its_fold(tmp_path):
    from data_prep.sources import SourceConfig, SourceError, open_source

    config = SourceConfig(synthetic_identities=20, synthetic_images_per_identity=2, folds=4, fold=1, val_fraction=0.2)
    data = open_source(config, tmp_path, min_image_size=32)
    people = {s: {r.identity for r in data.records if r.split == s} for s in ("train", "val", "test")}
    assert len(people["test"]) == 5 and len(people["val"]) == 3 and len(people["train"]) == 12
    with pytest.raises(SourceError, match="not both"):
        open_source(SourceConfig(synthetic_identities=20, folds=4, test_fraction=0.2), tmp_path, min_image_size=32)
    with pytest.raises(SourceError, match="0 <= fold < folds"):
        open_source(SourceConfig(synthetic_identities=20, folds=4, fold=4), tmp_path, min_image_size=32)


def test_bad_fractions():
    with pytest.raises(SplitError):
        identity_disjoint_split(_records(people=5), (0.5, 0.2, 0.2))
    with pytest.raises(SplitError):
        identity_disjoint_split(_records(people=5), test_fraction=1.5)


@pytest.mark.real_data
def test_resplit_real_celeba(shared_data):
    from data_prep.datasets import load_celeba

    data = load_celeba(shared_data / "celeba")
    assert len(data.subset("test").identities()) == 14
    resplit = resplit_by_identity(data, test_fraction=0.25, seed=0)
    assert len(resplit.subset("test").identities()) == 38 and not split_leaks(resplit.records)
