"""BEGAN's CPU speed options: each keeps the paper's function and changes only what it says."""

import pytest
import torch
from torch import nn

from engine.config import ConfigError, load_config
from engine.presets import resolve_preset
from gan.generators.config import BEGANConfig, GANConfig, GANRunConfig
from gan.generators.models import BEGANDiscriminator, BEGANGenerator, build_began
from gan.generators.models.began import FastELU



def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_fast_elu_matches_elu_values_and_gradients():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64).requires_grad_()
    y_ref = nn.functional.elu(x)
    (g_ref,) = torch.autograd.grad(y_ref.sum(), x)
    x2 = x.detach().clone().requires_grad_()
    y = FastELU()(x2)
    (g,) = torch.autograd.grad(y.sum(), x2)
    assert torch.allclose(y, y_ref, atol=1e-12)
    assert torch.allclose(g, g_ref, atol=1e-12)
    assert torch.autograd.gradcheck(FastELU(), (torch.randn(3, 4, dtype=torch.float64, requires_grad=True),))


def test_convs_per_scale_sets_the_convolutions_per_block():
    paper = BEGANGenerator(latent_dim=8, image_size=64, hidden_channels=4)
    slim = BEGANGenerator(latent_dim=8, image_size=64, hidden_channels=4, convs_per_scale=(2, 2, 1, 1))
    # decoder: 2 per block at 4 resolutions + to_image = 9; slim: 2+2+1+1 + 1 = 7
    assert len(_convs(paper)) == 9 and len(_convs(slim)) == 7
    d = BEGANDiscriminator(image_size=64, hidden_channels=4, bottleneck_dim=6, convs_per_scale=(2, 2, 1, 1))
    images = torch.randn(2, 3, 64, 64)
    assert d(images).shape == images.shape
    with pytest.raises(ValueError, match="4 counts"):
        BEGANGenerator(latent_dim=8, image_size=64, hidden_channels=4, convs_per_scale=(2, 2, 1))


def test_channels_last_and_fast_elu_leave_outputs_unchanged():
    torch.manual_seed(0)
    plain = BEGANDiscriminator(image_size=32, hidden_channels=8, bottleneck_dim=6)
    torch.manual_seed(0)
    fast = BEGANDiscriminator(image_size=32, hidden_channels=8, bottleneck_dim=6, fast_elu=True, channels_last=True)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in _convs(fast))
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(plain(x), fast(x), atol=1e-5)


def test_config_fields_reach_the_networks_and_are_validated():
    cfg = GANConfig(model="began", image_size=64,
                    began=BEGANConfig(hidden_channels=4, convs_per_scale=[2, 2, 1, 1], fast_elu=True))
    assert cfg.began.convs_per_scale == (2, 2, 1, 1)
    generator, discriminator = build_began(cfg)
    assert len(_convs(generator)) == 7
    assert any(isinstance(m, FastELU) for m in discriminator.modules())
    with pytest.raises(ConfigError, match="convs_per_scale"):
        BEGANConfig(convs_per_scale=(2, 0, 1, 1))


def test_fast_preset_builds_the_slim_networks():
    run = load_config(GANRunConfig, resolve_preset("began64-fast", "gan.generators"))
    assert run.gan.began.convs_per_scale == (2, 2, 1, 1) and run.gan.began.fast_elu and run.gan.began.channels_last
    assert run.trainer.amp  # bfloat16 where the CPU has it: 1.45x more steps in the budget
    generator, discriminator = build_began(run.gan)
    assert len(_convs(generator)) == 7
    # pyramid decoders: 64 channels at 8x8 in both, n = 16 at full size
    assert generator.project[0].out_features == discriminator.decoder.project[0].out_features == 64 * 8 * 8
    assert generator.to_image.in_channels == discriminator.decoder.to_image.in_channels == 16


def test_skip_connections_feed_h0_to_every_later_block():
    torch.manual_seed(0)
    decoder = BEGANGenerator(latent_dim=8, image_size=32, hidden_channels=4, skip=True, fast_elu=True, channels_last=True)
    in_channels = [c.in_channels for c in _convs(decoder)]
    # 8x8: two convs on n; 16x16 and 32x32: the first conv reads n + the upsampled h0; then to_image.
    assert in_channels == [4, 4, 8, 4, 8, 4, 4]
    assert decoder(torch.randn(2, 8)).shape == (2, 3, 32, 32)
    # Silence the 8x8 block: without skips nothing of z would get past it, with skips h0 still does.
    plain = BEGANGenerator(latent_dim=8, image_size=32, hidden_channels=4)
    for generator in (decoder, plain):
        with torch.no_grad():
            for conv in _convs(generator)[:2]:
                conv.weight.zero_()
                conv.bias.zero_()
    z = torch.randn(2, 8)
    assert not torch.allclose(decoder(z)[0], decoder(z)[1])
    assert torch.allclose(plain(z)[0], plain(z)[1])


def test_skip_option_reaches_both_decoders_and_keeps_plain_checkpoint_names():
    cfg = GANConfig(model="began", image_size=32, began=BEGANConfig(hidden_channels=4, skip=True))
    generator, discriminator = build_began(cfg)
    assert generator.skip and discriminator.decoder.skip
    plain, _ = build_began(GANConfig(model="began", image_size=32, began=BEGANConfig(hidden_channels=4)))
    assert set(plain.state_dict()) == set(generator.state_dict())


def test_decoder_widths_change_channels_before_each_upsampling():
    decoder = BEGANGenerator(latent_dim=8, image_size=64, hidden_channels=4, convs_per_scale=(2, 2, 1, 1),
                             widths=(12, 10, 6, 4))
    convs = _convs(decoder)
    # 8x8: 12->12, 12->10 (the last conv of a block already gives the next block's width), 16x16:
    # 10->10, 10->6, 32x32: 6->4, 64x64: 4->4, then to_image 4->3.
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (12, 12), (12, 10), (10, 10), (10, 6), (6, 4), (4, 4), (4, 3)]
    assert decoder.project[0].out_features == 12 * 8 * 8
    assert decoder(torch.randn(2, 8)).shape == (2, 3, 64, 64)
    # Which convolution runs at which resolution: the width changes before the upsampling.
    sizes = []
    hooks = [c.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for c in convs]
    decoder(torch.randn(1, 8))
    for hook in hooks:
        hook.remove()
    assert sizes == [8, 8, 16, 16, 32, 64, 64]
    skipped = BEGANGenerator(latent_dim=8, image_size=32, hidden_channels=4, skip=True, widths=(8, 6, 4))
    # the first conv of each later block reads its input plus h0's 8 channels
    assert [c.in_channels for c in _convs(skipped)] == [8, 8, 6 + 8, 6, 4 + 8, 4, 4]
    assert skipped(torch.randn(2, 8)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="3 channel counts"):
        BEGANGenerator(latent_dim=8, image_size=32, hidden_channels=4, widths=(8, 4))


def test_width_options_reach_their_own_decoder_and_default_to_the_paper():
    cfg = GANConfig(model="began", image_size=32,
                    began=BEGANConfig(hidden_channels=4, generator_widths=[16, 8, 4]))
    assert cfg.began.generator_widths == (16, 8, 4)
    generator, discriminator = build_began(cfg)
    assert generator.project[0].out_features == 16 * 64
    assert discriminator.decoder.project[0].out_features == 4 * 64  # the discriminator keeps n
    _, wide_d = build_began(GANConfig(model="began", image_size=32,
                                      began=BEGANConfig(hidden_channels=4, decoder_widths=[16, 8, 4])))
    assert wide_d.decoder.project[0].out_features == 16 * 64
    assert wide_d.encoder.to_code[1].in_features == 3 * 4 * 64  # the encoder is unchanged
    plain, _ = build_began(GANConfig(model="began", image_size=32, began=BEGANConfig(hidden_channels=4)))
    same, _ = build_began(GANConfig(model="began", image_size=32,
                                    began=BEGANConfig(hidden_channels=4, generator_widths=[4, 4, 4])))
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in same.state_dict().items()}
    with pytest.raises(ConfigError, match="generator_widths"):
        BEGANConfig(generator_widths=(16, 0, 4))
