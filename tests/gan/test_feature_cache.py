"""Cached features (`gan.metrics.feature_cache`): the same images meet the extractor once, other
images, batching or extractors are not served from the cache, and a damaged file is extracted
again, not trusted."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan.metrics.feature_cache import cached_features


class CountingExtractor:
    """Features that depend on the pixels, counting the images it is asked for."""

    def __init__(self):
        self.images = 0

    def __call__(self, batches) -> np.ndarray:
        out = []
        for batch in batches:
            self.images += len(batch)
            pixels = batch.reshape(len(batch), -1).double()
            out.append((pixels.mean(1, keepdim=True) + torch.arange(8)).numpy())
        return np.concatenate(out)


def _images(seed: int, n: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=generator)
    return [images[:4], images[4:]]


def _features(batches, extractor, cache_dir, depends=None):
    return cached_features(batches, depends or {"protocol": "counting"}, lambda: extractor(batches), cache_dir)


def test_the_same_images_are_extracted_once_and_read_back_equal(tmp_path):
    extractor = CountingExtractor()
    first = _features(_images(0), extractor, tmp_path)
    again = _features(_images(0), extractor, tmp_path)  # a later run: new tensors, the same pixels
    assert extractor.images == 6 and np.array_equal(first, again) and again.dtype == np.float64
    assert np.array_equal(first, CountingExtractor()(_images(0)))


def test_other_images_batching_or_extractors_are_not_served_from_the_cache(tmp_path):
    extractor = CountingExtractor()
    _features(_images(0), extractor, tmp_path)
    _features(_images(1), extractor, tmp_path)  # other pixels
    _features([torch.cat(_images(0))], extractor, tmp_path)  # the same pixels batched otherwise
    _features(_images(0), extractor, tmp_path, {"protocol": "another network"})
    assert extractor.images == 24 and len(list(tmp_path.glob("*.npy"))) == 4


@pytest.mark.parametrize("damage", ["truncated", "wrong shape"])
def test_a_damaged_cache_file_is_extracted_again(tmp_path, damage):
    extractor = CountingExtractor()
    right = _features(_images(0), extractor, tmp_path)
    (path,) = tmp_path.glob("*.npy")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        np.save(path, np.zeros((2, 8)))
    again = _features(_images(0), extractor, tmp_path)
    assert extractor.images == 12 and np.array_equal(again, right)
    assert np.array_equal(np.load(path), right)  # and the file is whole again


def test_without_a_folder_nothing_is_kept(tmp_path):
    extractor = CountingExtractor()
    _features(_images(0), extractor, None)
    _features(_images(0), extractor, None)
    assert extractor.images == 12 and not list(tmp_path.iterdir())
