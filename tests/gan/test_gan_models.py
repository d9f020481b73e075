"""Shapes and architecture of the DCGAN and BEGAN networks against the papers."""
import pytest
import torch
from torch import nn

from gan.generators.config import DCGANConfig, GANConfig
from gan.generators.models import (
    BEGANDiscriminator,
    BEGANGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
    build_began,
    build_dcgan,
    build_gan,
    sample_latent,
    slerp,
)

SIZES = (32, 64, 128)


@pytest.mark.parametrize("size", SIZES)
def test_dcgan_shapes(size):
    g = DCGANGenerator(latent_dim=100, image_size=size, base_channels=64)
    d = DCGANDiscriminator(image_size=size, base_channels=64)
    images = g(torch.randn(2, 100))
    assert images.shape == (2, 3, size, size)
    assert d(images).shape == (2,)
    for norm in ("layer", "none"):
        assert DCGANDiscriminator(size, 64, norm=norm)(images).shape == (2,)


@pytest.mark.parametrize("size", SIZES)
def test_began_shapes(size):
    g = BEGANGenerator(latent_dim=16, image_size=size, hidden_channels=8)
    d = BEGANDiscriminator(image_size=size, hidden_channels=8, bottleneck_dim=12)
    images = g(torch.rand(2, 16) * 2 - 1)
    assert images.shape == (2, 3, size, size)
    assert d(images).shape == (2, 3, size, size)  # an autoencoder: reconstruction out
    assert d.encoder(images).shape == (2, 12)


def test_dcgan_generator_follows_the_paper_at_64px():
    g = DCGANGenerator()  # paper defaults: 100-d noise, 1024 channels at 4x4
    project = g.project[0]
    assert isinstance(project, nn.Linear) and (project.in_features, project.out_features) == (100, 1024 * 4 * 4)
    shapes = []
    x = g.project(torch.randn(2, 100))
    shapes.append(tuple(x.shape[1:]))
    for stage in g.stages:
        conv = stage[0]
        assert isinstance(conv, nn.ConvTranspose2d)
        assert (conv.kernel_size, conv.stride, conv.padding) == ((4, 4), (2, 2), (1, 1))
        assert isinstance(stage[1], nn.BatchNorm2d) and isinstance(stage[2], nn.ReLU)
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    x = g.to_image(x)
    shapes.append(tuple(x.shape[1:]))
    # Each stage halves the channels and doubles the size; the output layer has no BatchNorm.
    assert shapes == [(1024, 4, 4), (512, 8, 8), (256, 16, 16), (128, 32, 32), (3, 64, 64)]
    assert isinstance(g.to_image[-1], nn.Tanh)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.to_image.modules())


def test_dcgan_generator_output_is_tanh_bounded():
    g = DCGANGenerator(image_size=32, base_channels=64)
    with torch.no_grad():
        g.to_image[0].weight.mul_(1000)  # push the pre-activation far into saturation
        out = g(torch.randn(4, 100) * 50)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert out.min() < -0.99 and out.max() > 0.99


def test_dcgan_discriminator_follows_the_paper():
    d = DCGANDiscriminator(image_size=64)
    kinds = {type(m) for m in d.modules()}
    assert not kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear}
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs[:-1]] == [(2, 2)] * 4  # strided convolutions instead of pooling
    assert [c.out_channels for c in convs] == [128, 256, 512, 1024, 1]
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    # No normalisation on the input layer, BatchNorm on every later one.
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.stem.modules())
    assert all(isinstance(stage[1], nn.BatchNorm2d) for stage in d.stages)


def test_dcgan_discriminator_norm_options():
    assert all(isinstance(s[1], nn.GroupNorm) and s[1].num_groups == 1 for s in DCGANDiscriminator(32, 64, norm="layer").stages)
    plain = DCGANDiscriminator(32, 64, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in plain.modules())
    # Without BatchNorm a sample's score must not depend on the rest of its batch.
    x = torch.randn(4, 3, 32, 32)
    for norm in ("layer", "none"):
        d = DCGANDiscriminator(32, 64, norm=norm)
        assert torch.allclose(d(x)[:1], d(x[:1]), atol=1e-5)
    with pytest.raises(ValueError, match="norm must be one of"):
        DCGANDiscriminator(32, 64, norm="instance")


def test_dcgan_init_is_normal_0_002():
    g = DCGANGenerator()
    weights = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.ConvTranspose2d, nn.Linear))])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.02)
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=5e-3) and bn.std().item() == pytest.approx(0.02, rel=0.1)


def test_bad_sizes_and_widths_are_rejected():
    with pytest.raises(ValueError, match="image_size must be one of"):
        DCGANGenerator(image_size=48)
    with pytest.raises(ValueError, match="image_size must be one of"):
        BEGANGenerator(image_size=256)
    with pytest.raises(ValueError, match="multiple of 8"):
        DCGANGenerator(image_size=64, base_channels=100)


def test_began_uses_elu_and_no_batchnorm():
    g, d = build_began(GANConfig(model="began", image_size=32))
    for net in (g, d):
        kinds = {type(m) for m in net.modules()}
        assert nn.ELU in kinds
        assert not any(issubclass(k, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) for k in kinds)
        assert not kinds & {nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d}
    assert isinstance(g.out, nn.Identity)  # the paper's decoder ends in a plain convolution


def test_began_generator_is_the_decoder_architecture_and_the_paper_layout():
    cfg = GANConfig(model="began", image_size=64)
    g, d = build_began(cfg)
    assert [tuple(p.shape) for p in g.parameters()] == [tuple(p.shape) for p in d.decoder.parameters()]
    assert g.project[0].out_features == 128 * 8 * 8  # FC to 8x8xn
    # Encoder: channels grow linearly, n, 2n, 3n, 4n, with stride-2 convolutions between blocks.
    convs = [m for m in d.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs if c.stride == (2, 2)] == [256, 384, 512]
    assert convs[-1].out_channels == 4 * 128
    assert d.encoder.to_code[-1].out_features == 64  # h
    assert all(c.kernel_size == (3, 3) for c in convs)
    ups = [m for m in g.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 3 and all(u.mode == "nearest" and u.scale_factor == 2 for u in ups)


def test_began_tanh_option_bounds_output():
    g = BEGANGenerator(latent_dim=8, image_size=32, hidden_channels=4, tanh=True)
    with torch.no_grad():
        g.to_image.weight.mul_(1e4)
        out = g(torch.rand(2, 8))
    assert out.abs().max() <= 1.0


def test_factories_follow_the_config():
    cfg = GANConfig(model="dcgan", image_size=32, dcgan=DCGANConfig(g_channels=64, d_channels=32, loss="wgan-gp"))
    g, d = build_dcgan(cfg)
    assert isinstance(g, DCGANGenerator) and g.project[0].out_features == 64 * 16
    assert [c.out_channels for c in d.modules() if isinstance(c, nn.Conv2d)] == [8, 16, 32, 1]
    assert all(isinstance(s[1], nn.GroupNorm) for s in d.stages)  # wgan-gp resolves to layer norm
    g2, d2 = build_gan(GANConfig(model="began", image_size=32))
    assert isinstance(g2, BEGANGenerator) and isinstance(d2, BEGANDiscriminator)


def test_latent_sampling_and_slerp():
    gen = torch.Generator().manual_seed(0)
    z = sample_latent(1000, 8, "uniform", generator=gen)
    assert z.min() >= -1 and z.max() <= 1 and z.min() < -0.99
    again = sample_latent(1000, 8, "uniform", generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, again)
    assert sample_latent(3, 5, "normal").shape == (3, 5)
    with pytest.raises(ValueError, match="unknown latent distribution"):
        sample_latent(1, 1, "cauchy")
    # slerp between orthogonal unit vectors stays on the unit circle; endpoints are exact.
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    path = slerp(e0, e1, torch.linspace(0, 1, 5))
    assert torch.allclose(path.norm(dim=-1), torch.ones(5), atol=1e-6)
    assert torch.allclose(path[0], e0) and torch.allclose(path[-1], e1, atol=1e-6)
    assert torch.allclose(slerp(e0, e1, 0.5), torch.tensor([0.5**0.5, 0.5**0.5]), atol=1e-6)
    # Batched endpoints, and parallel vectors (undefined angle) fall back to a straight line.
    batch = slerp(torch.randn(3, 4), torch.randn(3, 4), torch.linspace(0, 1, 6))
    assert batch.shape == (6, 3, 4)
    assert torch.allclose(slerp(e0, 2 * e0, 0.5), torch.tensor([1.5, 0.0]))
