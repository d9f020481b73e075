"""The inference fast path: BatchNorm folded into convolutions, channels_last, optional compile.

At inference a BatchNorm is a fixed per-channel affine map, y = s * x + t with
s = gamma / sqrt(running_var + eps) and t = beta - s * running_mean. Where it directly follows
a linear layer, the affine map can be written into that layer's weights and bias, and the
BatchNorm disappears (one pass over memory less per layer):

- conv -> BN: W' = s[o] * W[o], b' = s[o] * (b[o] - mean[o]) + beta[o] for output channel o;
- conv -> PixelShuffle(r) -> BN: pixel shuffle only moves values between channels and pixels
  (output channel c is made of conv channels c*r^2 ... c*r^2 + r^2 - 1), and a per-channel
  affine map commutes with such a move, so the BN folds into the conv with s and t repeated
  r^2 times per channel;
- linear -> BatchNorm1d: as conv -> BN.

A BatchNorm *before* a convolution with zero padding cannot be folded into it exactly.
Folding forward would mean conv(s * x + t) = conv_s(x) + conv(t), with conv_s the conv whose
input channels are scaled by s, and conv(t) a constant bias. That holds only where the kernel
sees no padding: in the original network the zeros padded around the BN's *output* contribute
nothing, while in the folded one the padded zeros are inputs to the affine map that the
convolution no longer applies, so the border pixels would miss (part of) the W * t term. The
error is confined to a frame of kernel_size // 2 pixels, but for a 16 x 16 feature map that
is a quarter of it. (Padding the input with -t / s instead would be exact, but needs a
per-channel pad value that no standard op offers.) Such a BN, and any BN with no foldable
neighbour, is therefore replaced by `ChannelAffine`: the same affine map as one fused
multiply-add with precomputed s and t, which still saves the normalisation arithmetic. A BN
directly before a convolution *without* padding (e.g. a 1 x 1 conv) is folded forward exactly.

The graph is found with torch.fx, so attribute-style models (torchvision ResNets: conv1, bn1)
fold as well as nn.Sequential ones; a model fx cannot trace falls back to folding consecutive
children of nn.Sequential containers. BNs without running statistics (track_running_stats=False
normalise with batch statistics even in eval mode) are left alone.

    fast = optimize_for_inference(model)            # an eval-mode copy; `model` is untouched
    with torch.inference_mode():
        y = fast(x)                                  # equals model.eval()(x) within float error
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "ChannelAffine",
    "InferenceModule",
    "bn_affine",
    "fold_conv_bn",
    "fold_linear_bn",
    "fold_bn_into_next_conv",
    "fold_batchnorm",
    "count_batchnorms",
    "optimize_for_inference",
]

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ChannelAffine(nn.Module):
    """y = scale[c] * x + shift[c] over dimension 1: an inference-time BatchNorm, precomputed."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm) -> "ChannelAffine":
        scale, shift = bn_affine(bn)
        return cls(scale, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(self.shift.view(shape), x, self.scale.view(shape))

    def extra_repr(self) -> str:
        return f"{self.scale.numel()}"


@torch.no_grad()
def bn_affine(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) with bn(x) == s * x + t per channel in eval mode (float64 maths, bn's dtype out)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn} has no running statistics; it cannot be expressed as a fixed affine map")
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if bn.affine:
        shift = shift + bn.bias.double()
    dtype = bn.running_var.dtype
    return scale.to(dtype), shift.to(dtype)


def _ensure_bias(layer: nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear, channels: int) -> None:
    if layer.bias is None:
        weight = layer.weight
        layer.bias = nn.Parameter(torch.zeros(channels, dtype=weight.dtype, device=weight.device))


@torch.no_grad()
def fold_conv_bn(conv: nn.Module, bn: _BatchNorm, repeat: int = 1) -> None:
    """Write `bn` (applied after `conv`, possibly through a pixel shuffle) into `conv` in place.

    `repeat` = r^2 when a PixelShuffle(r) sits between them: BN channel c scales conv output
    channels c*r^2 ... c*r^2 + r^2 - 1.
    """
    if not isinstance(conv, _CONVS):
        raise TypeError(f"fold_conv_bn needs a Conv1d/2d/3d, got {type(conv).__name__}")
    if conv.out_channels != bn.num_features * repeat:
        raise ValueError(f"{conv} has {conv.out_channels} outputs, {bn} expects {bn.num_features} x {repeat}")
    scale, shift = bn_affine(bn)
    scale, shift = scale.repeat_interleave(repeat), shift.repeat_interleave(repeat)
    _ensure_bias(conv, conv.out_channels)
    w = conv.weight
    view = (-1,) + (1,) * (w.dim() - 1)
    # groups > 1 keeps output channels on dim 0 too, so the same scaling applies
    w.copy_((w.double() * scale.double().view(view)).to(w.dtype))
    conv.bias.copy_((conv.bias.double() * scale.double() + shift.double()).to(conv.bias.dtype))


@torch.no_grad()
def fold_linear_bn(linear: nn.Linear, bn: _BatchNorm) -> None:
    """Write a BatchNorm1d applied to `linear`'s (N, C) output into `linear` in place."""
    if linear.out_features != bn.num_features:
        raise ValueError(f"{linear} has {linear.out_features} outputs, {bn} expects {bn.num_features}")
    scale, shift = bn_affine(bn)
    _ensure_bias(linear, linear.out_features)
    linear.weight.copy_((linear.weight.double() * scale.double()[:, None]).to(linear.weight.dtype))
    linear.bias.copy_((linear.bias.double() * scale.double() + shift.double()).to(linear.bias.dtype))


def _unpadded(conv: nn.Module) -> bool:
    padding = conv.padding
    if isinstance(padding, str):
        return padding == "valid"
    return all(p == 0 for p in padding)


@torch.no_grad()
def fold_bn_into_next_conv(bn: _BatchNorm, conv: nn.Module) -> None:
    """Write `bn` (applied before `conv`) into `conv` in place; only exact without padding.

    conv(s * x + t) = conv with W[:, i] scaled by s[i], plus bias sum_i,k W[o, i, k] * t[i].
    """
    if not isinstance(conv, _CONVS) or not _unpadded(conv):
        raise ValueError("a BN can be folded into the following conv only when that conv has no padding")
    if conv.groups != 1:
        raise ValueError("folding a BN into a grouped conv that follows it is not supported")
    if conv.in_channels != bn.num_features:
        raise ValueError(f"{conv} takes {conv.in_channels} channels, {bn} gives {bn.num_features}")
    scale, shift = bn_affine(bn)
    _ensure_bias(conv, conv.out_channels)
    w = conv.weight.double()
    view = (1, -1) + (1,) * (w.dim() - 2)
    extra = (w * shift.double().view(view)).flatten(1).sum(1)
    conv.weight.copy_((w * scale.double().view(view)).to(conv.weight.dtype))
    conv.bias.copy_((conv.bias.double() + extra).to(conv.bias.dtype))


def _foldable_bn(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm) and module.running_mean is not None and module.running_var is not None


def count_batchnorms(model: nn.Module) -> int:
    """BatchNorm layers left in `model` (0 after a complete fold)."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


# --------------------------------------------------------------------------------------- fx
def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)


def _fold_fx(model: nn.Module) -> nn.Module:
    import torch.fx as fx

    graph_module = fx.symbolic_trace(model)
    modules = dict(graph_module.named_modules())
    graph = graph_module.graph
    # A module called at more than one place shares its weights between those calls: folding
    # a BN into it would change the other calls too.
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def module_of(node: Any) -> nn.Module | None:
        if isinstance(node, fx.Node) and node.op == "call_module":
            return modules[node.target]
        return None

    def sole_use(node: fx.Node) -> bool:
        return len(node.users) == 1 and (node.op != "call_module" or calls[node.target] == 1)

    def pixel_shuffle_factor(node: Any) -> int | None:
        if not isinstance(node, fx.Node):
            return None
        module = module_of(node)
        if isinstance(module, nn.PixelShuffle):
            return module.upscale_factor
        if node.op == "call_function" and node.target in (torch.pixel_shuffle, torch.nn.functional.pixel_shuffle):
            factor = node.args[1] if len(node.args) > 1 else node.kwargs.get("upscale_factor")
            return factor if isinstance(factor, int) else None
        return None

    folded = affine = 0
    for node in list(graph.nodes):
        bn = module_of(node)
        if not _foldable_bn(bn) or calls[node.target] != 1 or not node.args:
            continue
        source = node.args[0]
        producer = module_of(source)
        done = False
        if isinstance(producer, _CONVS) and sole_use(source):
            fold_conv_bn(producer, bn)
            done = True
        elif isinstance(producer, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and sole_use(source):
            fold_linear_bn(producer, bn)
            done = True
        else:
            factor = pixel_shuffle_factor(source)
            if factor is not None and sole_use(source):
                conv_node = source.args[0]
                conv = module_of(conv_node)
                if isinstance(conv, nn.Conv2d) and sole_use(conv_node):
                    fold_conv_bn(conv, bn, repeat=factor * factor)
                    done = True
        if not done and len(node.users) == 1:
            consumer_node = next(iter(node.users))
            consumer = module_of(consumer_node)
            if (isinstance(consumer, _CONVS) and _unpadded(consumer) and consumer.groups == 1
                    and calls[consumer_node.target] == 1 and consumer_node.args[0] is node):
                fold_bn_into_next_conv(bn, consumer)
                done = True
        if done:
            node.replace_all_uses_with(source)
            graph.erase_node(node)
            folded += 1
        else:
            _set_submodule(graph_module, node.target, ChannelAffine.from_batchnorm(bn))
            affine += 1
    graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    log.debug("folded %d BatchNorm(s) into neighbouring layers, %d kept as ChannelAffine", folded, affine)
    return graph_module


# ------------------------------------------------------------------------------- sequential
def _fold_sequential(model: nn.Module) -> nn.Module:
    """Fallback for untraceable models: fold consecutive children of nn.Sequential containers."""
    for container in list(model.modules()):
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        children = [container._modules[n] for n in names]
        for i, child in enumerate(children):
            if not _foldable_bn(child):
                continue
            previous = children[i - 1] if i >= 1 else None
            before = children[i - 2] if i >= 2 else None
            following = children[i + 1] if i + 1 < len(children) else None
            if isinstance(previous, _CONVS):
                fold_conv_bn(previous, child)
            elif isinstance(previous, nn.Linear) and isinstance(child, nn.BatchNorm1d):
                fold_linear_bn(previous, child)
            elif isinstance(previous, nn.PixelShuffle) and isinstance(before, nn.Conv2d):
                fold_conv_bn(before, child, repeat=previous.upscale_factor**2)
            elif isinstance(following, _CONVS) and _unpadded(following) and following.groups == 1:
                fold_bn_into_next_conv(child, following)
            else:
                container._modules[names[i]] = ChannelAffine.from_batchnorm(child)
                continue
            container._modules[names[i]] = nn.Identity()
    # BNs outside Sequential containers (attributes used in a custom forward) stay exact as affines.
    for name, module in list(model.named_modules()):
        if name and _foldable_bn(module):
            _set_submodule(model, name, ChannelAffine.from_batchnorm(module))
    return model


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """An eval-mode model with every foldable BatchNorm folded and the rest as `ChannelAffine`.

    Returns a torch.fx GraphModule when the model can be traced (the usual case), else the
    (copied) model with its nn.Sequential children folded. `inplace=False` leaves `model` as is.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    try:
        return _fold_fx(model).eval()
    except Exception as exc:  # fx raises many types on data-dependent control flow
        log.info("torch.fx cannot trace %s (%s: %s); folding nn.Sequential children only",
                 type(model).__name__, type(exc).__name__, exc)
        return _fold_sequential(model).eval()


class InferenceModule(nn.Module):
    """Runs `module` with its input converted to channels_last (the layout oneDNN and cuDNN
    convolutions prefer); `module` itself holds channels_last weights."""

    def __init__(self, module: nn.Module, channels_last: bool = True):
        super().__init__()
        self.module = module
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor, *args, **kwargs):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x, *args, **kwargs)


def optimize_for_inference(model: nn.Module, channels_last: bool = True, compile: bool = False, fold: bool = True) -> nn.Module:
    """An eval-mode copy of `model` for fast inference; `model` is not changed.

    fold: BatchNorms folded into neighbouring layers (see the module docstring);
    channels_last: weights and 4-d inputs in NHWC memory order;
    compile: `torch.compile` the result (worth it for repeated calls of one input shape; the
    first call pays the compilation, and it needs a C++ compiler on the CPU).
    The returned module has no gradients (requires_grad off everywhere).
    """
    fast = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
    fast.requires_grad_(False)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    fast = InferenceModule(fast, channels_last=channels_last).eval()
    if compile:
        fast = torch.compile(fast, dynamic=False)
    return fast
