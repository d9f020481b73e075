"""The FID Inception loader: where it looks, what it says when the weights are missing, and
loading a weights file through the real path (random weights made here, since the real
95 MB file cannot be downloaded in tests)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from gan.metrics import compute_fid_kid
from gan.metrics.inception import (INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL,
                                   InceptionFeatureExtractor, InceptionWeightsError, find_inception_weights)

try:
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
except ImportError:  # the loader's lookup and messages are tested without it
    fidelity_inception = None

needs_fidelity = pytest.mark.skipif(fidelity_inception is None, reason="torch-fidelity is not installed")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch the weights from the network fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    if fidelity_inception is not None:
        monkeypatch.setattr(fidelity_inception, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture(scope="module")
def random_weights_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds a randomly initialised Inception under the real name."""
    if fidelity_inception is None:
        pytest.skip("torch-fidelity is not installed")

    class RandomInit(fidelity_inception.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random init
            return None

    home = tmp_path_factory.mktemp("torch_home")
    empty = home / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    model = RandomInit("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    target = home / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
    target.parent.mkdir(parents=True)
    torch.save(model.state_dict(), target)
    return home


def test_missing_weights_message_says_what_and_where(empty_torch_home):
    with pytest.raises(InceptionWeightsError) as info:
        find_inception_weights()
    message = str(info.value)
    expected_path = empty_torch_home / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
    assert INCEPTION_WEIGHTS_URL in message
    assert INCEPTION_WEIGHTS_URL.endswith("/v0.2.0/weights-inception-2015-12-05-6726825d.pth")
    assert str(expected_path) in message
    assert INCEPTION_WEIGHTS_ENV in message
    # The same error, and no download, from the extractor and from compute_fid_kid's default.
    with pytest.raises(InceptionWeightsError, match="not found"):
        InceptionFeatureExtractor()
    images = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(InceptionWeightsError, match="not found"):
        compute_fid_kid(images, images)


def test_env_var_naming_a_missing_file(empty_torch_home, monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "inception.pth"
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(missing))
    with pytest.raises(InceptionWeightsError, match=f"{INCEPTION_WEIGHTS_ENV}=.*does not name an existing file"):
        find_inception_weights()


@needs_fidelity
def test_corrupt_weights_file(empty_torch_home, tmp_path):
    bad = tmp_path / INCEPTION_WEIGHTS_FILE
    bad.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(InceptionWeightsError, match="does not start with 6726825d"):
        InceptionFeatureExtractor(bad)
    with pytest.raises(InceptionWeightsError, match="cannot be read as a PyTorch state dict"):
        InceptionFeatureExtractor(bad, verify_hash=False)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(InceptionWeightsError, match="does not match the FID Inception architecture"):
        InceptionFeatureExtractor(wrong, verify_hash=False)


def test_loads_from_hub_cache_and_extracts_2048d(random_weights_home, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(random_weights_home))
    path = find_inception_weights()
    assert path == random_weights_home / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
    # Random weights are not the published file: the hash check refuses them...
    with pytest.raises(InceptionWeightsError, match="sha256"):
        InceptionFeatureExtractor()
    # ...and an explicit opt-out loads them through the same path.
    extractor = InceptionFeatureExtractor(verify_hash=False)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 48, 40, 3), dtype=np.uint8)  # any size: resized inside
    first = extractor(images)
    second = extractor(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert first.shape == (2, 2048) and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)  # deterministic, and both layouts agree
    assert not torch.equal(first[0], first[1])
    protocol = extractor.protocol()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert protocol["weights_file"] == INCEPTION_WEIGHTS_FILE
    assert protocol["weights_sha256_prefix"] == digest[:12]
    assert protocol["weights_verified"] is False
    assert "299x299" in protocol["resize"]


def test_env_var_path_wins(random_weights_home, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(random_weights_home / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE))
    assert find_inception_weights().parent == random_weights_home / "hub" / "checkpoints"
