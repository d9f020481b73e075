"""The domain gap's embedding cache: the same faces are embedded once, other faces or another
embedder are not served from it, and a damaged cache file is embedded again, not trusted."""
from __future__ import annotations

import numpy as np
import pytest

from data_prep.datasets.schema import LabelSchema
from data_prep.face_array import FaceArray
from transfer.domain_gap import _CachedEmbedder


class CountingEmbedder:
    """128-d 'embeddings' that depend on the pixels, counting the faces it is asked for."""

    def __init__(self, name: str = "fake"):
        self.name, self.faces = name, 0

    def protocol(self) -> dict:
        return {"feature_extractor": self.name}

    def embed(self, images) -> np.ndarray:
        self.faces += len(images)
        pixels = images.numpy().reshape(len(images), -1).astype(np.float64)
        return np.repeat(pixels.mean(1, keepdims=True), 128, axis=1) + np.arange(128)


def _faces(seed: int, n: int = 6) -> FaceArray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    return FaceArray(images, np.zeros((n, 1), np.float32), np.ones((n, 1), bool), LabelSchema.binary(["Male"]),
                     name=f"set{seed}")


def test_the_same_faces_are_embedded_once_and_read_back_equal(tmp_path):
    embedder = CountingEmbedder()
    faces, rows = _faces(0), np.array([0, 2, 4])
    first = _CachedEmbedder(embedder, tmp_path)(faces, rows)
    again = _CachedEmbedder(embedder, tmp_path)(faces, rows)  # a new run: a new object, the same folder
    assert embedder.faces == 3 and np.array_equal(first, again) and again.dtype == np.float64
    assert np.array_equal(first, CountingEmbedder().embed(faces.get_batch(rows)))


def test_other_faces_rows_or_embedders_are_not_served_from_the_cache(tmp_path):
    embedder = CountingEmbedder()
    cached = _CachedEmbedder(embedder, tmp_path)
    cached(_faces(0), np.array([0, 2, 4]))
    cached(_faces(1), np.array([0, 2, 4]))  # other pixels
    cached(_faces(0), np.array([0, 2, 5]))  # other rows
    other = CountingEmbedder("another network")
    _CachedEmbedder(other, tmp_path)(_faces(0), np.array([0, 2, 4]))
    assert embedder.faces == 9 and other.faces == 3
    assert len(list(tmp_path.glob("*.npy"))) == 4


@pytest.mark.parametrize("damage", ["truncated", "wrong shape"])
def test_a_damaged_cache_file_is_embedded_again(tmp_path, damage):
    embedder = CountingEmbedder()
    faces, rows = _faces(0), np.array([1, 3])
    right = _CachedEmbedder(embedder, tmp_path)(faces, rows)
    (path,) = tmp_path.glob("*.npy")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        np.save(path, np.zeros((2, 7)))
    again = _CachedEmbedder(embedder, tmp_path)(faces, rows)
    assert embedder.faces == 4 and np.array_equal(again, right)
    assert np.array_equal(np.load(path), right)  # and the file is whole again


def test_without_a_folder_nothing_is_kept(tmp_path):
    embedder = CountingEmbedder()
    cached = _CachedEmbedder(embedder, None)
    cached(_faces(0), np.array([0, 1]))
    cached(_faces(0), np.array([0, 1]))
    assert embedder.faces == 4
