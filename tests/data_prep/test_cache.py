"""The aligned-face cache: exact round trip, skipped images with reasons, resumable builds,
stale-cache detection, and DataLoader workers."""
import argparse
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data_prep import cli as data_prep_cli
from data_prep.cache import AlignedFaceCache, CacheError, StaleCacheError, build_cache, resize_square, source_fingerprint
from data_prep.datasets.base import FaceDataset
from data_prep.datasets.record import SampleRecord
from data_prep.datasets.schema import LabelSchema
from data_prep.images import load_rgb
from data_prep.synthetic import SyntheticConfig, generate_synthetic, load_synthetic

SIZE = 32


class CountingAligner:
    """A stand-in for FaceAligner: 'aligns' by resizing, finds no face in near-black images,
    and records what it was given."""

    def __init__(self, size: int = SIZE):
        self.size = size
        self.images_seen = 0
        self.landmarks_seen: list = []

    def align_batch(self, images, landmarks=None):
        self.images_seen += len(images)
        self.landmarks_seen.extend(landmarks if landmarks is not None else [None] * len(images))
        results = []
        for image in images:
            if image.mean() < 5:
                results.append(SimpleNamespace(status="no_face", face=None, reason="no face detected"))
            else:
                results.append(SimpleNamespace(status="aligned", face=resize_square(image, self.size), reason=""))
        return results


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    config = SyntheticConfig(num_identities=6, images_per_identity=2, image_size=SIZE, seed=7)
    return load_synthetic(generate_synthetic(root, config, progress=False))


def test_round_trip_images_and_targets(tmp_path, synth):
    cache = build_cache(synth, tmp_path / "c", SIZE, shard_size=7, progress=False)
    assert len(cache) == len(synth) == 24
    assert len(list((tmp_path / "c").glob("images-*.u8"))) == 4
    assert cache.schema == synth.schema and not cache.skipped
    for i in range(len(synth)):
        item, original = cache[i], synth[i]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, SIZE, SIZE)
        assert torch.equal(item["image"], original["image"])
        assert torch.equal(item["targets"], original["targets"]) and torch.equal(item["mask"], original["mask"])
        assert item["index"] == i
    order = [23, 0, 7, 8, 3, 3]
    batch = cache.get_batch(order)
    assert batch.shape == (6, 3, SIZE, SIZE) and batch.is_contiguous()
    assert torch.equal(batch, torch.stack([synth[i]["image"] for i in order]))
    targets, mask = cache.get_targets(order)
    assert torch.equal(targets, torch.stack([synth[i]["targets"] for i in order]))
    # Records come back with the same labels (exact, not float32-rounded), identities and splits.
    for mine, theirs in zip(cache.records, synth.records):
        assert (mine.path, mine.labels) == (theirs.path, theirs.labels)
        assert (mine.identity, mine.split) == (theirs.identity, theirs.split)
    # The on-disk layout is plain: a raw shard is a (N, S, S, 3) uint8 memmap.
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    first = np.memmap(tmp_path / "c" / index["shards"][0]["file"], dtype=np.uint8, mode="r").reshape(-1, SIZE, SIZE, 3)
    assert np.array_equal(first[1], load_rgb(synth.records[1].path))


def test_subsets_are_views_with_their_own_positions(tmp_path, synth):
    cache = build_cache(synth, tmp_path / "c", SIZE, progress=False)
    train = cache.subset("train")
    expected = synth.subset("train")
    assert len(train) == len(expected) and train.split_counts() == {"train": len(expected)}
    assert train.identities() == expected.identities()
    assert torch.equal(train.get_batch([0, len(train) - 1]),
                       torch.stack([expected[0]["image"], expected[len(expected) - 1]["image"]]))
    wild = cache.subset(keep=lambda r: "/wild/" in str(r.path))
    assert len(wild) == 12 and all("/wild/" in p for p in wild.paths)
    with pytest.raises(CacheError):
        cache.subset("holdout")


def test_without_aligner_images_are_centre_cropped_and_resized(tmp_path):
    wide = np.zeros((30, 60, 3), np.uint8)
    wide[:, :15] = (255, 0, 0)   # left band: cropped away
    wide[:, 15:45] = (0, 255, 0)
    wide[:, 45:] = (0, 0, 255)   # right band: cropped away
    Image.fromarray(wide).save(tmp_path / "wide.png")
    dataset = FaceDataset("wide", [SampleRecord(tmp_path / "wide.png")], LabelSchema())
    cache = build_cache(dataset, tmp_path / "c", 16, progress=False)
    face = cache.get_batch([0])[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(face - (0, 255, 0)).max() <= 2


def _folder_with_bad_files(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(60, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "good.png")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image\n")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "dark.png")
    names = ["good.png", "zero.jpg", "notes.png", "dark.png"]
    schema = LabelSchema.binary(["Smiling"])
    return FaceDataset("folder", [SampleRecord(folder / n, {"Smiling": i % 2}) for i, n in enumerate(names)], schema)


def test_bad_images_and_faceless_images_are_skipped_with_reasons(tmp_path):
    dataset = _folder_with_bad_files(tmp_path)
    cache = build_cache(dataset, tmp_path / "c", SIZE, aligner=CountingAligner(), progress=False)
    assert len(cache) == 1 and cache.paths == [str(dataset.records[0].path)]
    reasons = {item.source.rsplit("/", 1)[-1]: item.reason for item in cache.skipped}
    assert reasons["zero.jpg"].startswith("empty")
    assert reasons["notes.png"].startswith("not_an_image")
    assert reasons["dark.png"] == "no_face: no face detected"
    # Reasons survive a reopen: they are stored in the index.
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert len(index["skipped"]) == 3 and len(AlignedFaceCache(tmp_path / "c").skipped) == 3
    # Without an aligner the dark image is kept (no face detection), the broken files are not.
    plain = build_cache(dataset, tmp_path / "plain", SIZE, progress=False)
    assert len(plain) == 2 and len(plain.skipped) == 2


def test_aligner_gets_the_landmarks_and_must_match_the_size(tmp_path, synth):
    aligner = CountingAligner()
    build_cache(synth, tmp_path / "c", SIZE, aligner=aligner, progress=False)
    assert aligner.images_seen == len(synth)
    for seen, record in zip(aligner.landmarks_seen, synth.records):
        assert np.allclose(seen, np.asarray(record.meta["landmarks"]))
    with pytest.raises(CacheError, match="output_size=32"):
        build_cache(synth, tmp_path / "wrong", SIZE, aligner=CountingAligner(size=48), progress=False)


def test_interrupted_build_resumes_without_redoing_finished_shards(tmp_path, synth):
    out = tmp_path / "c"

    def stop_after_first(shard, num_shards):
        if shard == 0:
            raise KeyboardInterrupt

    first = CountingAligner()
    with pytest.raises(KeyboardInterrupt):
        build_cache(synth, out, SIZE, aligner=first, shard_size=10, on_shard_done=stop_after_first, progress=False)
    assert first.images_seen == 10
    assert (out / "progress.json").is_file() and not (out / "index.json").exists()
    with pytest.raises(CacheError, match="unfinished"):
        AlignedFaceCache(out)
    shard0 = out / "images-00000.u8"
    stamp = shard0.stat().st_mtime_ns
    second = CountingAligner()
    # A different shard_size on resume is ignored: the started build's boundaries are kept.
    cache = build_cache(synth, out, SIZE, aligner=second, shard_size=3, progress=False)
    assert second.images_seen == len(synth) - 10
    assert shard0.stat().st_mtime_ns == stamp
    assert not (out / "progress.json").exists()
    assert len(cache) == len(synth)
    assert torch.equal(cache.get_batch(range(len(cache))), torch.stack([synth[i]["image"] for i in range(len(synth))]))
    # A finished cache is reused as is.
    third = CountingAligner()
    build_cache(synth, out, SIZE, aligner=third, progress=False)
    assert third.images_seen == 0


def test_stale_cache_is_detected(tmp_path, synth):
    out = tmp_path / "c"
    original = build_cache(synth, out, SIZE, progress=False)
    records = list(synth.records)
    changed = SampleRecord(records[0].path, {**records[0].labels, "Smiling": 1 - records[0].labels["Smiling"]},
                           records[0].identity, records[0].split, records[0].meta)
    relabelled = synth.with_records([changed] + records[1:])
    with pytest.raises(StaleCacheError, match="different source"):
        build_cache(relabelled, out, SIZE, on_stale="error", progress=False)
    with pytest.raises(StaleCacheError):
        build_cache(synth, out, 24, on_stale="error", progress=False)
    rebuilt = build_cache(relabelled, out, SIZE, progress=False)
    assert rebuilt.records[0].labels["Smiling"] == changed.labels["Smiling"]
    assert rebuilt.fingerprint != original.fingerprint
    # Dropping a record is a different source too.
    smaller = build_cache(synth.with_records(records[:5]), out, SIZE, progress=False)
    assert len(smaller) == 5 and len(list(out.glob("images-*.u8"))) == 1


def test_a_template_is_fingerprinted_by_its_geometry_not_its_name(tmp_path, synth):
    from data_prep.align.aligner import AlignConfig
    from data_prep.align.templates import get_template

    portrait = get_template("portrait").points
    file = tmp_path / "mine.json"
    file.write_text(json.dumps({"size": 100, "points": portrait.tolist()}))
    by_file, by_name = CountingAligner(), CountingAligner()
    by_file.config, by_name.config = AlignConfig(template=str(file)), AlignConfig(template="portrait")
    first = source_fingerprint(synth, SIZE, by_file)
    assert first == source_fingerprint(synth, SIZE, by_name)  # the same faces share one cache
    out = tmp_path / "c"
    build_cache(synth, out, SIZE, aligner=by_file, progress=False)
    file.write_text(json.dumps({"size": 100, "points": (portrait * 1.1).tolist()}))  # edited in place
    assert source_fingerprint(synth, SIZE, by_file) != first
    with pytest.raises(StaleCacheError, match="different source"):
        build_cache(synth, out, SIZE, aligner=by_file, on_stale="error", progress=False)


def test_resplit_reuses_the_aligned_faces(tmp_path, synth):
    from data_prep.datasets.splits import resplit_by_identity

    out = tmp_path / "c"
    aligner = CountingAligner()
    first = build_cache(synth, out, SIZE, aligner=aligner, progress=False)
    seen = aligner.images_seen
    resplit = resplit_by_identity(synth, test_fraction=0.5, val_fraction=0.0, seed=3)
    assert [r.split for r in resplit.records] != [r.split for r in synth.records]
    again = build_cache(resplit, out, SIZE, aligner=aligner, on_stale="error", progress=False)
    assert aligner.images_seen == seen  # nothing aligned again
    assert again.fingerprint != first.fingerprint
    assert [r.split for r in again.records] == [r.split for r in resplit.records]
    assert torch.equal(again.get_batch(range(len(again))), first.get_batch(range(len(first))))
    assert build_cache(resplit, out, SIZE, aligner=aligner, progress=False).fingerprint == again.fingerprint
    # back to the first split, and an index from before content fingerprints existed is upgraded on reuse
    index = json.loads((out / "index.json").read_text())
    back = build_cache(synth, out, SIZE, aligner=aligner, progress=False)
    assert aligner.images_seen == seen and back.fingerprint == first.fingerprint
    index = json.loads((out / "index.json").read_text())
    index.pop("content_fingerprint")
    (out / "index.json").write_text(json.dumps(index))
    build_cache(synth, out, SIZE, aligner=aligner, progress=False)
    assert "content_fingerprint" in json.loads((out / "index.json").read_text())
    # other labels are other content: a full rebuild
    records = list(synth.records)
    changed = SampleRecord(records[0].path, {**records[0].labels, "Smiling": 1 - records[0].labels["Smiling"]},
                           records[0].identity, "test", records[0].meta)
    build_cache(synth.with_records([changed] + records[1:]), out, SIZE, aligner=aligner, progress=False)
    assert aligner.images_seen > seen


def test_missing_or_corrupt_cache_is_a_clear_error(tmp_path, synth):
    with pytest.raises(CacheError, match="no aligned-face cache"):
        AlignedFaceCache(tmp_path / "nowhere")
    out = tmp_path / "c"
    build_cache(synth, out, SIZE, progress=False)
    shard = next(out.glob("images-*.u8"))
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(CacheError, match="wrong size"):
        AlignedFaceCache(out)
    # build_cache notices and rebuilds instead of serving a broken cache.
    assert len(build_cache(synth, out, SIZE, progress=False)) == len(synth)
    with pytest.raises(CacheError, match="no images"):
        build_cache(synth.with_records([]), tmp_path / "empty", SIZE, progress=False)


def test_dataloader_with_worker_processes(tmp_path, synth):
    cache = build_cache(synth, tmp_path / "c", SIZE, shard_size=5, progress=False)
    cache[0]  # memmaps opened in this process must not travel to the workers
    assert cache._maps
    restored = pickle.loads(pickle.dumps(cache))
    assert not restored._maps and torch.equal(restored[3]["image"], cache[3]["image"])
    loader = DataLoader(cache, batch_size=5, num_workers=2, shuffle=False)
    images, indices = [], []
    for batch in loader:
        assert batch["image"].dtype == torch.uint8 and batch["targets"].shape[1] == len(cache.schema)
        images.append(batch["image"])
        indices.append(batch["index"])
    assert torch.equal(torch.cat(indices), torch.arange(len(cache)))
    assert torch.equal(torch.cat(images), cache.get_batch(range(len(cache))))


def test_transform_is_applied_by_getitem_only(tmp_path, synth):
    cache = AlignedFaceCache(build_cache(synth, tmp_path / "c", SIZE, progress=False).path,
                             transform=lambda image: image.float() / 255.0)
    assert cache[0]["image"].dtype == torch.float32
    assert cache.get_batch([0]).dtype == torch.uint8


def test_cli_caches_the_synthetic_dataset(tmp_path, synth, capsys):
    commands = argparse.ArgumentParser().add_subparsers(dest="command")
    data_prep_cli.register(commands)
    parser = commands.choices["data"]
    out = tmp_path / "c"
    args = parser.parse_args(["cache", str(out), "--dataset", "synthetic", "--root", str(synth.root),
                              "--size", "16", "--no-align", "--split", "val", "--workers", "0", "--no-progress"])
    assert args.func(args) == 0
    assert "faces at 16x16" in capsys.readouterr().out
    cache = AlignedFaceCache(out)
    assert set(cache.split_counts()) == {"val"} and len(cache) == len(synth.subset("val"))


def test_value_groups_cut_an_age_into_contiguous_groups_that_cover_every_age(tmp_path, synth):
    cache = build_cache(synth, tmp_path / "c", SIZE, progress=False)
    grouped = cache.with_value_groups("Age", [30, 50], "AgeGroup")
    task = grouped.schema["AgeGroup"]
    assert task.kind.value == "ordinal" and task.classes == ("18-29", "30-49", "50+")
    column, age = grouped.schema.names.index("AgeGroup"), grouped.schema.names.index("Age")
    targets, mask = grouped.get_targets(list(range(len(grouped))))
    for record, target, known, age_known in zip(grouped.records, targets, mask, mask[:, age]):
        years = record.labels["Age"]
        assert int(target[column]) == (0 if years < 30 else 1 if years < 50 else 2)
        assert bool(known[column]) == bool(age_known)
    assert len(set(targets[:, column].tolist())) == 3, "the synthetic ages reach every group"
    # splits of the grouped cache keep the task
    train = grouped.subset(split="train")
    assert "AgeGroup" in train.schema and len(train) < len(grouped)
    assert cache.schema == synth.schema, "the original view is unchanged"
    with pytest.raises(CacheError, match="no regression task 'Height'"):
        cache.with_value_groups("Height", [30], "G")
    with pytest.raises(CacheError, match="increasing"):
        cache.with_value_groups("Age", [50, 30], "G")
    with pytest.raises(CacheError, match="inside Age's range"):
        cache.with_value_groups("Age", [10, 30], "G")
    with pytest.raises(CacheError, match="already has a task"):
        grouped.with_value_groups("Age", [30], "AgeGroup")


def test_processes_opening_one_cache_at_once_build_it_once(tmp_path, synth):
    # torchrun's ranks each open the training cache: the first builds it, the others wait and reuse it
    import subprocess
    import sys

    code = f"""
import logging, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
from data_prep.sources import SourceConfig, aligned_cache, open_source
config = SourceConfig(source="folder", root={str(synth.root)!r}, align=False, cache_dir={str(tmp_path / 'cache')!r})
cache = aligned_cache(open_source(config, {str(tmp_path)!r}, min_image_size=16), config, {SIZE}, {str(tmp_path)!r}, progress=False)
print("faces", len(cache))
"""
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    built = [out for out in outputs if "data_prep.cache: cached" in out]
    reused = [out for out in outputs if "up to date" in out and "reusing it" in out]
    assert len(built) == 1 and len(reused) == 1, outputs
    counts = [out.split("faces ")[-1].strip() for out in outputs]
    assert counts[0] == counts[1] and int(counts[0]) > 0


def test_one_folder_spelled_relative_or_absolute_shares_one_cache(tmp_path, synth, monkeypatch, caplog):
    """The same data folder given as a relative and as an absolute path is the same source: the
    second command reuses the first one's cache instead of rebuilding it."""
    import logging
    import os

    from data_prep.sources import SourceConfig, aligned_cache, open_source

    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(synth.root, tmp_path)
    assert not Path(relative).is_absolute()
    for root in (relative, str(synth.root)):
        config = SourceConfig(source="folder", root=root, align=False, cache_dir=str(tmp_path / "cache"))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="data_prep.cache"):
            cache = aligned_cache(open_source(config, tmp_path, min_image_size=16), config, SIZE, tmp_path, progress=False)
        assert len(cache) > 0
    assert "up to date" in caplog.text and "rebuilding" not in caplog.text
