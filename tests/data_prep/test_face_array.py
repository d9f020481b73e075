"""FaceArray: in-memory aligned faces with the interface trainers read from a cache."""
import numpy as np
import pytest
import torch

from data_prep.datasets.schema import LabelSchema
from data_prep.face_array import FaceArray, FaceArrayError

SCHEMA = LabelSchema.binary(["Male", "Smiling"])


def _faces(n=5, size=8, offset=0, name="a"):
    images = (np.arange(n * size * size * 3).reshape(n, size, size, 3) + offset) % 251
    targets = torch.tensor([[i % 2, (i + 1) % 2] for i in range(n)], dtype=torch.float32)
    mask = torch.ones(n, 2, dtype=torch.bool)
    return FaceArray(images.astype(np.uint8), targets, mask, SCHEMA, [f"p{i // 2}" for i in range(n)],
                     [f"img{i}.jpg" for i in range(n)], name)


def test_items_and_batches_have_the_cache_layout():
    faces = _faces()
    item = faces[3]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.uint8
    assert torch.equal(item["image"], torch.from_numpy(faces.images[3]).permute(2, 0, 1))
    assert item["targets"].tolist() == [1.0, 0.0] and item["index"] == 3
    batch = faces.get_batch([4, 0])
    assert batch.shape == (2, 3, 8, 8) and torch.equal(batch[1], faces[0]["image"])
    assert faces.identities() == {"p0", "p1", "p2"} and faces.size == 8


def test_concat_map_and_save_roundtrip(tmp_path):
    a, b = _faces(), _faces(3, offset=7, name="b")
    both = FaceArray.concat([a, b])
    assert len(both) == 8 and torch.equal(both.get_batch([5]), b.get_batch([0]))
    assert both.identity[5:] == b.identity and both.paths[5:] == b.paths
    inverted = a.map_batches(lambda x, rows: 255 - x, batch_size=2, name="inv")
    assert np.array_equal(inverted.images, 255 - a.images) and torch.equal(inverted.targets, a.targets)
    path = both.save(tmp_path / "faces.npz")
    back = FaceArray.load(path)
    assert np.array_equal(back.images, both.images) and torch.equal(back.targets, both.targets)
    assert back.identity == both.identity and back.schema == SCHEMA and back.name == both.name


def test_mismatches_and_bad_files_are_clear_errors(tmp_path):
    a = _faces()
    with pytest.raises(FaceArrayError, match="targets and mask"):
        FaceArray(a.images, a.targets[:3], a.mask, SCHEMA)
    with pytest.raises(FaceArrayError, match="uint8"):
        a.map_batches(lambda x, rows: x.float())
    other = FaceArray(a.images, a.targets[:, :1], a.mask[:, :1], LabelSchema.binary(["Male"]))
    with pytest.raises(FaceArrayError, match="cannot concatenate"):
        FaceArray.concat([a, other])
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(FaceArrayError, match="delete it to rebuild"):
        FaceArray.load(broken)


def test_from_cache_keeps_the_tasks_asked_and_drops_unlabelled_faces(tmp_path):
    from data_prep.cache import build_cache
    from data_prep.datasets.base import FaceDataset
    from data_prep.datasets.record import SampleRecord
    from PIL import Image

    records = []
    for i in range(4):
        path = tmp_path / f"f{i}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(path)
        labels = {"Smiling": i % 2} if i != 2 else {"Male": 1}  # face 2 has no Smiling label
        records.append(SampleRecord(path, labels, f"id{i}", "train"))
    cache = build_cache(FaceDataset("toy", records, SCHEMA), tmp_path / "cache", size=8, progress=False)
    faces = FaceArray.from_cache(cache, ["Smiling"])
    assert faces.schema.names == ["Smiling"] and len(faces) == 3
    assert faces.targets[:, 0].tolist() == [0.0, 1.0, 1.0] and faces.identity == ["id0", "id1", "id3"]
    with pytest.raises(FaceArrayError, match="no task"):
        FaceArray.from_cache(cache, ["Eyeglasses"])
