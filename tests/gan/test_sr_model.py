"""The SR generator's three block kinds, the generator at each scale, the critic, and the fast path."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ConfigError
from engine.fold import ChannelAffine, count_batchnorms, optimize_for_inference
from gan.sr.models import CommonBlock, DownBlock, SRCritic, SRGenerator, UpBlock, build_sr_critic, build_sr_generator
from gan.sr.config import SRModelConfig


def test_common_block_keeps_the_shape_and_has_the_specified_branch():
    block = CommonBlock(8)
    x = torch.randn(2, 8, 16, 16)
    assert block(x).shape == x.shape
    kinds = [type(m) for m in block.branch]
    assert kinds == [nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d, nn.PReLU, nn.Conv2d]
    # identity branch: with the residual branch silenced the block is the identity
    nn.init.zeros_(block.branch[-1].weight)
    nn.init.zeros_(block.branch[-1].bias)
    assert torch.equal(block(x), x)


def test_up_block_doubles_the_size_with_a_bilinear_skip():
    block = UpBlock(8, 4)
    x = torch.randn(2, 8, 8, 8)
    assert block(x).shape == (2, 4, 16, 16)
    assert [type(m) for m in block.branch] == [nn.Conv2d, nn.PixelShuffle, nn.BatchNorm2d, nn.PReLU, nn.Conv2d]
    nn.init.zeros_(block.branch[-1].weight)
    nn.init.zeros_(block.branch[-1].bias)
    skip = block.skip[1]
    expected = skip(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_down_block_is_the_common_block_pooled_on_both_branches():
    same = DownBlock(8, 8)
    x = torch.randn(2, 8, 16, 16)
    assert same(x).shape == (2, 8, 8, 8)
    assert isinstance(same.branch[-1], nn.AvgPool2d) and isinstance(same.skip[-1], nn.AvgPool2d)
    nn.init.zeros_(same.branch[-2].weight)
    nn.init.zeros_(same.branch[-2].bias)
    assert torch.allclose(same(x), F.avg_pool2d(x, 2), atol=1e-6)  # identity skip, pooled
    wider = DownBlock(8, 16, norm="layer")
    assert wider(x).shape == (2, 16, 8, 8) and isinstance(wider.skip[0], nn.Conv2d)


@pytest.mark.parametrize("lr, hr", [(8, 64), (16, 64), (16, 128), (8, 16)])
def test_generator_output_size_for_each_scale(lr, hr):
    cfg = SRModelConfig(input_size=lr, output_size=hr, channels=8, num_blocks=1, min_channels=4, critic_channels=4)
    generator = build_sr_generator(cfg)
    assert generator.scale == hr // lr
    assert len(generator.up) == {2: 1, 4: 2, 8: 3, 16: 4}[hr // lr]
    assert generator(torch.rand(2, 3, lr, lr) * 2 - 1).shape == (2, 3, hr, hr)
    assert build_sr_critic(cfg)(torch.rand(2, 3, hr, hr)).shape == (2,)


def test_the_untrained_generator_is_exactly_bicubic_upsampling():
    generator = SRGenerator(8, 32, channels=8, num_blocks=2, min_channels=4).eval()
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    expected = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.equal(generator(x), expected)
    plain = SRGenerator(8, 32, channels=8, num_blocks=2, min_channels=4, residual="none").eval()
    assert not torch.allclose(plain(x), expected, atol=1e-2)


def test_hourglass_down_blocks_run_at_half_size_and_come_back():
    generator = SRGenerator(16, 64, channels=8, num_blocks=2, down_blocks=1, min_channels=4)
    seen = []
    generator.body.register_forward_hook(lambda module, inputs, output: seen.append(tuple(output.shape)))
    assert generator(torch.rand(2, 3, 16, 16)).shape == (2, 3, 64, 64)
    assert seen == [(2, 8, 8, 8)]
    with pytest.raises(ValueError, match="divisible"):
        SRGenerator(12, 48, channels=8, num_blocks=1, down_blocks=3)


def test_critic_refuses_batchnorm_and_configs_check_their_fields():
    with pytest.raises(ValueError, match="BatchNorm"):
        SRCritic(32, norm="batch")
    with pytest.raises(ConfigError, match="output_size"):
        SRModelConfig(input_size=16, output_size=48)
    with pytest.raises(ConfigError, match="critic_norm"):
        SRModelConfig(critic_norm="batch")
    with pytest.raises(ConfigError, match="norm"):
        SRModelConfig(norm="group")


def test_generator_fast_path_equals_eager_and_folds_the_foldable_batchnorms():
    generator = SRGenerator(8, 32, channels=16, num_blocks=3, down_blocks=1, min_channels=8)
    g = torch.Generator().manual_seed(0)
    for module in generator.modules():  # trained-looking statistics and weights
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5, generator=g)
            module.running_var.uniform_(0.5, 2.0, generator=g)
            module.weight.data.normal_(1, 0.2, generator=g)
            module.bias.data.normal_(0, 0.2, generator=g)
    for module in generator.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data.normal_(0, 0.05, generator=g)
    generator.eval()
    fast = optimize_for_inference(generator)
    assert count_batchnorms(fast) == 0
    # the BN that opens a residual branch sits before a padded conv: kept as an exact affine
    affines = sum(isinstance(m, ChannelAffine) for m in fast.modules())
    assert affines == 3 + 1  # three common blocks and the down block
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(generator(x), fast(x), atol=1e-4)
