"""The SR degradation: seeded per image, the documented pipeline, and clear config errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.config import ConfigError
from data_prep.degrade import Degradation, DegradationConfig, bicubic_downsample, eval_seeds
from data_prep.transforms import resize_images


def _faces(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(n, 3, size // 4, size // 4, generator=g), size=size, mode="bilinear")
    return (smooth * 255).round().to(torch.uint8)


NOISY = DegradationConfig(blur_prob=0.5, noise_prob=0.5, jpeg_prob=0.5, jpeg_quality=(20, 60), seed=3)


def test_clean_degradation_is_antialiased_bicubic_rounded_to_8_bits():
    hr = _faces()
    lr = Degradation(DegradationConfig(), 4).degrade_uint8(hr, list(range(6)))
    expected = F.interpolate(hr.float(), size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
    assert lr.dtype == torch.uint8 and lr.shape == (6, 3, 8, 8)
    assert torch.equal(lr, expected.clamp(0, 255).round().to(torch.uint8))
    # the same filter as PIL's antialiased BICUBIC resize, up to PIL's 8-bit intermediate rounding
    pil = np.asarray(Image.fromarray(hr[0].permute(1, 2, 0).numpy()).resize((8, 8), Image.BICUBIC)).astype(int)
    assert np.abs(pil - lr[0].permute(1, 2, 0).numpy().astype(int)).max() <= 3
    # float input in [-1, 1] gives the same LR as uint8
    assert torch.equal(Degradation(DegradationConfig(), 4).degrade_uint8(hr.float() / 127.5 - 1, list(range(6))), lr)


def test_each_image_depends_only_on_its_own_seed():
    degrade = Degradation(NOISY, 4)
    hr = _faces()
    seeds = eval_seeds(NOISY, range(6))
    lr = degrade.degrade_uint8(hr, seeds)
    assert torch.equal(lr, degrade.degrade_uint8(hr, seeds))  # deterministic
    # a different batch split or order gives each image the same degradation
    parts = torch.cat([degrade.degrade_uint8(hr[4:], seeds[4:]), degrade.degrade_uint8(hr[:4], seeds[:4])])
    assert torch.equal(parts, torch.cat([lr[4:], lr[:4]]))
    other = degrade.degrade_uint8(hr, eval_seeds(DegradationConfig(**{**NOISY.__dict__, "seed": 4}), range(6)))
    assert not torch.equal(other, lr)
    assert eval_seeds(NOISY, [2]) == [seeds[2]]


def test_blur_noise_and_jpeg_each_change_the_result_when_on():
    hr = _faces()
    seeds = list(range(10, 16))
    clean = Degradation(DegradationConfig(), 4).degrade_uint8(hr, seeds)
    for config in (DegradationConfig(blur_prob=1.0, blur_sigma=(1.0, 1.0)),
                   DegradationConfig(noise_prob=1.0, noise_sigma=(5.0, 5.0)),
                   DegradationConfig(jpeg_prob=1.0, jpeg_quality=(10, 10))):
        changed = Degradation(config, 4).degrade_uint8(hr, seeds)
        assert changed.shape == clean.shape and (changed.float() - clean.float()).abs().mean() > 0.5, config
    # blur removes detail: the blurred LR is smoother than the clean one
    blurred = Degradation(DegradationConfig(blur_prob=1.0, blur_sigma=(1.0, 1.0)), 4).degrade_uint8(hr, seeds).float()
    assert blurred.diff(dim=-1).abs().mean() < clean.float().diff(dim=-1).abs().mean()
    # noise of sigma 5 (0..255) has about that standard deviation around the clean LR
    noisy = Degradation(DegradationConfig(noise_prob=1.0, noise_sigma=(5.0, 5.0)), 4).degrade_uint8(hr, seeds).float()
    assert 4.0 < float((noisy - clean.float()).std()) < 6.0


def test_probabilities_select_about_that_share_of_images():
    config = DegradationConfig(noise_prob=0.3, noise_sigma=(6.0, 6.0))
    hr = _faces(200, 16)
    noisy = Degradation(config, 2).degrade_uint8(hr, list(range(200))).float()
    clean = Degradation(DegradationConfig(), 2).degrade_uint8(hr, list(range(200))).float()
    share = float(((noisy - clean).abs().flatten(1).mean(1) > 1.0).float().mean())
    assert 0.2 < share < 0.4


def test_describe_records_the_config_and_the_fixed_choices():
    described = Degradation(NOISY, 8).describe()
    assert described["scale"] == 8 and described["noise_prob"] == 0.5 and described["jpeg_quality"] == (20, 60)
    assert "antialias=True" in described["downsample"] and described["order"].startswith("blur")


def test_bad_configs_and_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="blur_prob"):
        DegradationConfig(blur_prob=1.5)
    with pytest.raises(ConfigError, match="noise_sigma"):
        DegradationConfig(noise_sigma=(5.0, 1.0))
    with pytest.raises(ConfigError, match="jpeg_quality"):
        DegradationConfig(jpeg_quality=(50, 120))
    with pytest.raises(ValueError, match="seeds"):
        Degradation(DegradationConfig(), 4)(_faces(), [1, 2])
    with pytest.raises(ValueError, match="cannot be downsampled"):
        bicubic_downsample(torch.zeros(1, 3, 30, 30), 4)


def test_resize_images_enlarges_and_shrinks():
    x = torch.rand(1, 3, 10, 14) * 255
    assert resize_images(x, 5).shape == (1, 3, 5, 5)
    assert resize_images(x, (20, 28)).shape == (1, 3, 20, 28)
    assert resize_images(x, (10, 14)) is x
