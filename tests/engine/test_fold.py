"""engine.fold: BatchNorm folding and the inference fast path give the eager model's outputs."""
import copy

import pytest
import torch
from torch import nn

from engine.fold import (
    ChannelAffine,
    InferenceModule,
    bn_affine,
    count_batchnorms,
    fold_batchnorm,
    optimize_for_inference,
)


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=g))
            module.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            if module.affine:
                module.weight.data.copy_(torch.randn(n, generator=g))
                module.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor, atol: float = 1e-4) -> None:
    with torch.no_grad():
        expected, actual = a(x), b(x)
    assert expected.shape == actual.shape
    assert torch.allclose(expected, actual, atol=atol, rtol=1e-4), float((expected - actual).abs().max())


def test_bn_affine_is_the_eval_mode_batchnorm():
    bn = _randomise_bn(nn.BatchNorm2d(5))
    scale, shift = bn_affine(bn)
    x = torch.randn(2, 5, 3, 3)
    assert torch.allclose(bn(x), x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), atol=1e-5)


def test_conv_bn_pairs_fold_away_with_and_without_conv_bias():
    model = _randomise_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8),
    ))
    folded = fold_batchnorm(model)
    assert count_batchnorms(folded) == 0 and not any(isinstance(m, ChannelAffine) for m in folded.modules())
    _same(model, folded, torch.randn(2, 3, 9, 9))


def test_conv_pixelshuffle_bn_folds_with_the_scale_repeated_per_subpixel():
    model = _randomise_bn(nn.Sequential(nn.Conv2d(4, 3 * 4, 3, padding=1), nn.PixelShuffle(2), nn.BatchNorm2d(3)))
    folded = fold_batchnorm(model)
    assert count_batchnorms(folded) == 0
    _same(model, folded, torch.randn(2, 4, 5, 5))


def test_linear_batchnorm1d_folds():
    model = _randomise_bn(nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)))
    folded = fold_batchnorm(model)
    assert count_batchnorms(folded) == 0
    _same(model, folded, torch.randn(5, 6))


def test_bn_before_a_padded_conv_becomes_an_exact_affine_and_before_a_1x1_conv_folds_forward():
    padded = _randomise_bn(nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1)))
    folded = fold_batchnorm(padded)
    assert count_batchnorms(folded) == 0
    assert sum(isinstance(m, ChannelAffine) for m in folded.modules()) == 1
    _same(padded, folded, torch.randn(2, 4, 6, 6))
    # Why it is not folded forward: doing so is wrong on the border, exactly where padding is seen.
    naive = copy.deepcopy(padded)
    scale, shift = bn_affine(naive[0])
    conv = naive[1]
    with torch.no_grad():
        conv.bias += (conv.weight * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        conv.weight *= scale.view(1, -1, 1, 1)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        error = (conv(x) - padded(x)).abs()
    assert error[..., 1:-1, 1:-1].max() < 1e-4 and error[..., 0, :].max() > 1e-3

    pointwise = _randomise_bn(nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 6, 1)))
    folded = fold_batchnorm(pointwise)
    assert count_batchnorms(folded) == 0 and not any(isinstance(m, ChannelAffine) for m in folded.modules())
    _same(pointwise, folded, torch.randn(2, 4, 5, 5))


class _Residual(nn.Module):
    """Attribute-style layers (as torchvision's ResNet blocks): only torch.fx sees the conv -> bn pairs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def test_attribute_style_models_fold_through_fx():
    model = _randomise_bn(nn.Sequential(_Residual(), _Residual()))
    folded = fold_batchnorm(model)
    assert count_batchnorms(folded) == 0
    _same(model, folded, torch.randn(2, 4, 7, 7))


def test_torchvision_resnet_folds_completely():
    from torchvision.models import resnet18

    model = _randomise_bn(resnet18(weights=None, num_classes=3))
    folded = fold_batchnorm(model)
    assert count_batchnorms(folded) == 0
    _same(model, folded, torch.randn(1, 3, 64, 64), atol=1e-3)


def test_a_conv_used_twice_is_not_folded_into():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)

    model = _randomise_bn(Shared())
    folded = fold_batchnorm(model)
    _same(model, folded, torch.randn(2, 3, 5, 5))


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.body(x)
        if y.mean() > 100:  # data-dependent control flow: torch.fx cannot trace it
            y = -y
        return self.bn(y)


def test_untraceable_models_fold_their_sequential_children_and_keep_the_rest_exact():
    model = _randomise_bn(_Untraceable())
    folded = fold_batchnorm(model)
    assert isinstance(folded, _Untraceable) and count_batchnorms(folded) == 0
    assert isinstance(folded.body[1], nn.Identity) and isinstance(folded.bn, ChannelAffine)
    _same(model, folded, torch.randn(2, 3, 6, 6))


def test_optimize_for_inference_returns_an_eval_copy_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU(8), nn.Conv2d(8, 3, 3, padding=1))
    _randomise_bn(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model, channels_last=True)
    assert isinstance(fast, InferenceModule) and not fast.training
    assert model.training and count_batchnorms(model) == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in fast.parameters())
    x = torch.randn(3, 3, 8, 8)
    _same(model.eval(), fast, x)
    with torch.no_grad():
        assert fast(x).is_contiguous(memory_format=torch.channels_last)
    plain = optimize_for_inference(model, channels_last=False)
    _same(model.eval(), plain, x)


def test_bn_without_running_statistics_is_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False))
    folded = fold_batchnorm(model)
    assert count_batchnorms(folded) == 1
    _same(model.eval(), folded, torch.randn(4, 3, 5, 5))


@pytest.mark.parametrize("dtype", [torch.float64])
def test_folding_keeps_the_dtype(dtype):
    model = _randomise_bn(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))).to(dtype)
    folded = fold_batchnorm(model)
    assert next(folded.parameters()).dtype == dtype
    _same(model, folded, torch.randn(2, 3, 5, 5, dtype=dtype), atol=1e-10)
