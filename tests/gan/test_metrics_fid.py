"""compute_fid_kid end to end with a small fixed feature extractor (the real Inception weights
are not available offline), on crops of a real photograph."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from data_prep.images import ImageLoadError
from gan.metrics import ImageBatchError, compute_fid_kid, extract_features, iter_image_batches, to_uint8


class SmallExtractor(torch.nn.Module):
    """A fixed random conv net: uint8 NCHW -> 32-d features."""

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 5, stride=2),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        for parameter in self.parameters():
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float() / 127.5 - 1.0)


def _crops(image: np.ndarray, count: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, image.shape[0] - size, count)
    xs = rng.integers(0, image.shape[1] - size, count)
    return np.stack([image[y : y + size, x : x + size] for y, x in zip(ys, xs)])


def _blur(images: np.ndarray, radius: float) -> np.ndarray:
    from PIL import ImageFilter

    if radius == 0:
        return images
    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(radius))) for im in images])


@pytest.fixture(scope="module")
def crop_sets(astronaut_rgb):
    return _crops(astronaut_rgb, 160, 40, seed=0), _crops(astronaut_rgb, 160, 40, seed=1)


def test_identical_sets_give_zero(crop_sets):
    real, _ = crop_sets
    result = compute_fid_kid(real, real, SmallExtractor(), batch_size=50, kid_subsets=20, kid_subset_size=80)
    assert result["fd"] == pytest.approx(0.0, abs=1e-6)
    assert abs(result["kid_mean"]) < 3 * result["kid_std"] + 1e-9


def test_fd_and_kid_grow_monotonically_with_blur(crop_sets):
    real, _ = crop_sets
    extractor = SmallExtractor()
    real_batches = [real[i : i + 64] for i in range(0, len(real), 64)]  # an iterable of batches
    results = [
        compute_fid_kid(real_batches, _blur(real, radius), extractor, kid_subsets=20, kid_subset_size=100)
        for radius in (0, 0.5, 1, 2, 4)
    ]
    fds = [r["fd"] for r in results]
    kids = [r["kid_mean"] for r in results]
    assert fds[0] == pytest.approx(0.0, abs=1e-9)
    assert fds[0] < fds[1] < fds[2] < fds[3] < fds[4], fds
    assert kids[0] < kids[1] < kids[2] < kids[3] < kids[4], kids


def test_other_photo_is_farther_than_other_crops_of_the_same(crop_sets):
    skimage_data = pytest.importorskip("skimage.data")
    real, same_photo = crop_sets
    other_photo = _crops(skimage_data.chelsea(), 160, 40, seed=2)
    extractor = SmallExtractor()
    near = compute_fid_kid(real, same_photo, extractor, kid_subsets=20, kid_subset_size=100)
    far = compute_fid_kid(real, other_photo, extractor, kid_subsets=20, kid_subset_size=100)
    assert far["fd"] > 3 * near["fd"] > 0
    assert far["kid_mean"] > near["kid_mean"] + 3 * far["kid_std"]


def test_protocol_is_recorded(crop_sets):
    real, fake = crop_sets
    extractor = SmallExtractor()
    result = compute_fid_kid(real, fake, extractor, max_samples=100, kid_subsets=5, reference="astronaut crops, seed 0")
    protocol = result["protocol"]
    assert result["num_real"] == result["num_fake"] == 100
    assert protocol["num_real"] == 100 and protocol["max_samples"] == 100
    assert protocol["feature_extractor"] == "SmallExtractor"
    assert protocol["feature_dim"] == 32
    assert len(protocol["weights_sha256_prefix"]) == 12
    assert protocol["weights_sha256_prefix"] != compute_fid_kid(real, fake, SmallExtractor(seed=1), kid=False)["protocol"]["weights_sha256_prefix"]
    assert protocol["kid"] == {"mean": result["kid_mean"], "std": result["kid_std"], "n_subsets": 5, "subset_size": 100, "seed": 2020}
    assert protocol["reference"] == "astronaut crops, seed 0"
    assert protocol["real_source"] == "in-memory batches"
    assert "none" in protocol["resize"]


def test_folder_equals_in_memory_and_mixed_sizes(tmp_path, crop_sets):
    real, fake = crop_sets
    folder = tmp_path / "fake"
    folder.mkdir()
    for i, image in enumerate(fake[:30]):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    extractor = SmallExtractor()
    from_folder = compute_fid_kid(real, folder, extractor, kid_subset_size=20, kid_subsets=5)
    in_memory = compute_fid_kid(real, fake[:30], extractor, kid_subset_size=20, kid_subsets=5)
    assert from_folder["fd"] == pytest.approx(in_memory["fd"], rel=1e-9)
    assert from_folder["protocol"]["fake_source"] == str(folder.resolve())
    # A folder of two sizes arrives as runs of one size each.
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(folder / "100_small.png")
    shapes = [tuple(b.shape) for b in iter_image_batches(folder, batch_size=16)]
    assert shapes == [(16, 3, 40, 40), (14, 3, 40, 40), (1, 3, 20, 24)]
    # In-memory batches larger than batch_size are split; max_samples cuts the last one.
    sizes = [len(b) for b in iter_image_batches([fake[:30], fake[30:35]], batch_size=16, max_samples=33)]
    assert sizes == [16, 14, 3]
    (folder / "101_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageLoadError, match="101_broken.png"):
        extract_features(folder, extractor)


def test_generator_output_needs_explicit_uint8():
    tanh_output = torch.rand(4, 3, 16, 16) * 2 - 1
    with pytest.raises(ImageBatchError, match="to_uint8"):
        extract_features([tanh_output], SmallExtractor())
    converted = to_uint8(tanh_output)
    assert converted.dtype == torch.uint8 and converted.shape == (4, 3, 16, 16)
    assert extract_features([converted], SmallExtractor()).shape == (4, 32)
    with pytest.raises(ImageBatchError, match=r"\(N, H, W, 3\)"):
        extract_features([np.zeros((2, 3, 16, 16), np.uint8)], SmallExtractor())  # NCHW numpy


def test_extractor_returning_wrong_rows_is_an_error(crop_sets):
    real, _ = crop_sets
    with pytest.raises(Exception, match="returned 1 feature rows for a batch of 8"):
        extract_features(real[:8], lambda batch: torch.zeros(1, 4))
