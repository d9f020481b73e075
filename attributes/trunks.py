"""Shared trunks: the thesis's AlexNet with BatchNorm, and torchvision ResNets.

A trunk maps a (B, 3, S, S) face to a feature map (B, C, H, W); every dataset's head reads that
same map. `build_trunk` returns the module together with C and H so heads can be sized.

AlexNet-BN (Yu 2017, sec. 3.7.1): five ConvUnits (conv + BN + ReLU) with 3x3/stride-2 max pooling after the
first, second and fifth. At 224/256 px it is the thesis's layout (11x11/4, 5x5, 3x3 x3). For
small inputs the first conv becomes stride 1 ("stride-1 convs in the transfer experiment"):
at 64 px an 11x11/4 conv would leave a 15x15 map after one layer and 1x1 after the last pool.
Which kernel the first conv uses at each size is in `_ALEXNET_STEMS`; `width` scales every
channel count (1.0 = 96-256-384-384-256), because the full widths cost 1.3 GFLOP per 64 px
face, too much for a CPU budget of minutes.

VGG-BN: nine 3x3 ConvUnits of 32-32-64-64-128-128-256-256-256 channels (scaled by `width`) with
2x2 max pooling after the second, fourth and sixth, the plain network most people would write for
64 px faces (Simonyan & Zisserman 2015, with BatchNorm). It keeps the 64 px face at full resolution
for two convolutions, where AlexNet-BN pools after one, so small local attributes (lips, nose,
eyebrows) survive longer; `benchmarks/attributes_vs_plain.py` measures whether that pays.

ResNet: torchvision's ResNet layouts (10 = one block per stage, 18, 34, 50) built from its own
blocks with random weights (nothing is downloaded). For inputs below 128 px the 7x7/2 stem and its
max pool are replaced by a 3x3 conv, as is usual for small images: stride 1 keeps a 64 px face
on an 8x8 final map, stride 2 (`resnet_stem_stride`) on 4x4 at a quarter of the cost.
`resnet_width` scales the stage widths, for CPU budgets. `checkpoint` loads local weights: a
torchvision ImageNet file (at width 1.0), a trunk saved by this package, or the name of trunk
weights that ship inside it (`attributes/weights/*.pt`, listed by `shipped_trunk_weights()`; each
has a README line saying how it was trained, and `facegan attributes trunk-weights` makes one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from engine.checkpoint import CheckpointError, atomic_save, load_checkpoint, module_weights
from engine.errors import FaceganError
from engine.modes import eval_mode
from engine.presets import shipped_folder, shipped_names

__all__ = ["TrunkConfig", "ConvUnit", "AlexNetBN", "VGGBN", "ResNetTrunk", "build_trunk", "TrunkError",
           "shipped_trunk_weights", "trunk_weights_file", "write_trunk_weights"]

WEIGHTS_FOLDER = "weights"  # inside the attributes package: trunk weights found by name


class TrunkError(FaceganError, ValueError):
    """A trunk cannot be built or its weights cannot be loaded."""


@dataclass
class TrunkConfig:
    name: str = "alexnet_bn"  # alexnet_bn | vgg_bn | resnet10 | resnet18 | resnet34 | resnet50
    input_size: int = 64  # any size >= 32 px (AlexNet-BN picks its first conv by it; ResNets below 128 px use a 3x3 stem)
    # channel multiplier of AlexNet-BN (1.0 = the thesis's 96-256-384-384-256) and of VGG-BN
    # (1.0 = 32-32-64-64-128-128-256-256-256)
    width: float = 0.5
    # weights to start from: a file (torchvision ResNet, trunk state_dict, facegan checkpoint) or shipped weights by name
    checkpoint: str = ""
    channels: list[int] = field(default_factory=list)  # AlexNet-BN: explicit channels of its 5 convs (a pruned model); overrides width
    resnet_width: float = 1.0  # ResNet stage-width multiplier (1.0 = torchvision's 64-128-256-512)
    resnet_stem_stride: int = 1  # ResNet below 128 px: stride of the 3x3 stem (2 halves every map after it)


class ConvUnit(nn.Sequential):
    """conv (no bias: BN supplies it) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int | None = None):
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


# input size -> (first kernel, first stride, first padding)
_ALEXNET_STEMS = {224: (11, 4, 2), 128: (7, 2, 3), 64: (5, 1, 2)}


def _stem_for(input_size: int) -> tuple[int, int, int]:
    if input_size >= 192:
        return _ALEXNET_STEMS[224]
    if input_size >= 96:
        return _ALEXNET_STEMS[128]
    return _ALEXNET_STEMS[64]


def _check_plain_trunk(name: str, input_size: int, width: float) -> None:
    if input_size < 32:
        raise TrunkError(f"{name} needs inputs of at least 32 px, got {input_size}")
    if width <= 0:
        raise TrunkError(f"width must be positive, got {width}")


def _init_convs(module: nn.Module) -> None:
    """He initialisation (fan out, as torchvision's ResNet) of every convolution."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class AlexNetBN(nn.Module):
    """The thesis's AlexNet with BatchNorm after every conv; see the module docstring."""

    def __init__(self, input_size: int = 64, width: float = 0.5, in_channels: int = 3, channels: Sequence[int] = ()):
        super().__init__()
        _check_plain_trunk("AlexNet-BN", input_size, width)
        if channels and (len(channels) != 5 or min(channels) < 1):
            raise TrunkError(f"AlexNet-BN channels must be 5 positive counts, got {list(channels)}")
        c1, c2, c3, c4, c5 = channels or (max(8, int(round(c * width))) for c in (96, 256, 384, 384, 256))
        kernel, stride, padding = _stem_for(input_size)
        self.features = nn.Sequential(
            ConvUnit(in_channels, c1, kernel, stride, padding),
            nn.MaxPool2d(3, 2),
            ConvUnit(c1, c2, 5),
            nn.MaxPool2d(3, 2),
            ConvUnit(c2, c3, 3),
            ConvUnit(c3, c4, 3),
            ConvUnit(c4, c5, 3),
            nn.MaxPool2d(3, 2),
        )
        self.out_channels = c5
        self.input_size = input_size
        self.cam_layer = "features.6"  # the last conv unit, before the final pooling: where Grad-CAM looks
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


_VGG_CHANNELS = (32, 32, 64, 64, 128, 128, 256, 256, 256)
_VGG_POOL_AFTER = (2, 4, 6)  # 1-based conv indices followed by a 2x2 max pool


class VGGBN(nn.Module):
    """Nine 3x3 conv-BN-ReLU units with 2x2 max pools after the 2nd, 4th and 6th; see the module docstring."""

    def __init__(self, input_size: int = 64, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        _check_plain_trunk("VGG-BN", input_size, width)
        layers: list[nn.Module] = []
        previous = in_channels
        for index, base in enumerate(_VGG_CHANNELS, start=1):
            channels = max(8, int(round(base * width)))
            layers.append(ConvUnit(previous, channels, 3))
            if index in _VGG_POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
            previous = channels
        self.features = nn.Sequential(*layers)
        self.out_channels = previous
        self.input_size = input_size
        self.cam_layer = f"features.{len(layers) - 1}"
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# depth -> (block, blocks per stage), as torchvision builds them; 10 is the usual one-block-per-stage
# small ResNet
_RESNET_LAYOUTS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                   50: ("bottleneck", (3, 4, 6, 3))}


class ResNetTrunk(nn.Module):
    """A torchvision-layout ResNet without its pooling and classifier.

    At width 1.0 and 128 px or more its parameters have torchvision's shapes (and load its
    weights). `width` scales the stage widths 64-128-256-512; `small_stem_stride` is the stride
    of the 3x3 stem that replaces the 7x7/2 conv and max pool below 128 px."""

    def __init__(self, depth: int = 18, input_size: int = 64, width: float = 1.0, small_stem_stride: int = 1):
        super().__init__()
        from torchvision.models.resnet import BasicBlock, Bottleneck

        if depth not in _RESNET_LAYOUTS:
            raise TrunkError(f"ResNet depth must be one of {sorted(_RESNET_LAYOUTS)}, got {depth}")
        if width <= 0:
            raise TrunkError(f"width must be positive, got {width}")
        if small_stem_stride not in (1, 2):
            raise TrunkError(f"small_stem_stride must be 1 or 2, got {small_stem_stride}")
        kind, blocks = _RESNET_LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        planes = [max(8, int(round(64 * width * 2 ** i))) for i in range(4)]
        self.small_stem = input_size < 128
        if self.small_stem:
            stem = nn.Conv2d(3, planes[0], 3, stride=small_stem_stride, padding=1, bias=False)
            pool: nn.Module = nn.Identity()
        else:
            stem = nn.Conv2d(3, planes[0], 7, stride=2, padding=3, bias=False)
            pool = nn.MaxPool2d(3, 2, padding=1)
        stages, in_channels = [], planes[0]
        for index, (stage_planes, count) in enumerate(zip(planes, blocks)):
            stride = 1 if index == 0 else 2
            layers = []
            for k in range(count):
                out_channels = stage_planes * block.expansion
                downsample = None
                if k == 0 and (stride != 1 or in_channels != out_channels):
                    downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                               nn.BatchNorm2d(out_channels))
                layers.append(block(in_channels, stage_planes, stride if k == 0 else 1, downsample))
                in_channels = out_channels
            stages.append(nn.Sequential(*layers))
        # the same indices as torchvision's conv1, bn1, relu, maxpool, layer1..layer4 (load_torchvision)
        self.body = nn.Sequential(stem, nn.BatchNorm2d(planes[0]), nn.ReLU(inplace=True), pool, *stages)
        self.out_channels = in_channels
        self.input_size = input_size
        self.cam_layer = "body.7"  # layer4, the last convolutional stage
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def load_torchvision(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load a torchvision ResNet state_dict (fc dropped; the stem only when shapes match).
        Returns the keys that were not loaded."""
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        mapped = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head in names:
                mapped[f"body.{names.index(head)}.{rest}"] = value
        own = self.state_dict()
        usable = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(usable, strict=False)
        return sorted(set(own) - set(usable))


def shipped_trunk_weights() -> list[str]:
    """The names of the trunk weights that ship with facegan (`model.trunk.checkpoint: NAME`)."""
    return shipped_names("attributes", WEIGHTS_FOLDER, ".pt")


def trunk_weights_file(value: str) -> Path:
    """The file `value` names: an existing file, else shipped trunk weights of that name."""
    given = Path(value).expanduser()
    if given.is_file():
        return given
    name = given.name.removesuffix(".pt")
    names = shipped_trunk_weights()
    if given.parent == Path(".") and name in names:
        return shipped_folder("attributes", WEIGHTS_FOLDER) / f"{name}.pt"
    raise TrunkError(f"trunk checkpoint not found: {given} is not a file, and facegan ships no trunk weights of that "
                     f"name (it ships: {', '.join(names) or 'none'}); put the weights file at that path or name "
                     "shipped weights")


def write_trunk_weights(checkpoint: str | Path, out: str | Path, about: str = "") -> dict:
    """Save the trunk of an attribute checkpoint (its EMA weights when it has them) as a small file
    that `model.trunk.checkpoint` loads: {"state_dict": ..., "trunk": its TrunkConfig, "about": ...}."""
    checkpoint = Path(checkpoint)
    try:
        state = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise TrunkError(str(exc)) from None
    try:
        trunk_config = state["run_config"]["model"]["trunk"]
        weights, is_ema = module_weights(state, "model", where=checkpoint)
    except (CheckpointError, KeyError, TypeError):
        raise TrunkError(f"{checkpoint} is not the checkpoint of one attribute model (of an ensemble, give one "
                         "member's checkpoint: OUT/members/K/checkpoints/latest.pt)") from None
    trunk = {k.removeprefix("trunk."): v.detach().clone() for k, v in weights.items() if k.startswith("trunk.")}
    if not trunk:
        raise TrunkError(f"{checkpoint} holds no trunk weights")
    step = state.get("global_step", "?")
    record = {"state_dict": trunk, "trunk": {**trunk_config, "checkpoint": ""},
              "about": about or f"the {'EMA' if is_ema else 'trained'} weights of {checkpoint} at step {step}"}
    atomic_save(record, Path(out))
    return record


def _load_checkpoint(trunk: nn.Module, path: str) -> None:
    file = trunk_weights_file(path)
    try:
        state = load_checkpoint(file)  # weights only: a file with pickled code is refused
    except CheckpointError as exc:
        raise TrunkError(f"trunk checkpoint: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("modules"), dict) and "model" in state["modules"]:
        # a facegan training checkpoint (an identity model, say): its EMA model's trunk, else the raw one
        state, _ = module_weights(state, "model", where=file)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TrunkError(f"{file} does not hold a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("trunk.") for k in state):
        state = {k.removeprefix("trunk."): v for k, v in state.items() if k.startswith("trunk.")}
    if isinstance(trunk, ResNetTrunk) and not any(k.startswith("body.") for k in state):
        missing = trunk.load_torchvision(state)
        loaded = len(trunk.state_dict()) - len(missing)
        if loaded == 0:
            raise TrunkError(f"{file}: no tensor matches a ResNet trunk")
        return
    try:
        result = trunk.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        lines = str(exc).splitlines()
        raise TrunkError(f"{file} does not fit this trunk: {lines[1].strip() if len(lines) > 1 else exc}") from None
    if result.missing_keys:
        raise TrunkError(f"{file} does not fit this trunk: missing {result.missing_keys[:5]}")


def build_trunk(config: TrunkConfig) -> nn.Module:
    """The trunk named by `config`; `.out_channels` and `.input_size` describe its output."""
    name = config.name.lower()
    if name in ("alexnet_bn", "alexnet"):
        trunk: nn.Module = AlexNetBN(config.input_size, config.width, channels=config.channels)
    elif name == "vgg_bn":
        if config.channels:
            raise TrunkError("explicit channels (a pruned trunk) are only supported for alexnet_bn")
        trunk = VGGBN(config.input_size, config.width)
    elif name.startswith("resnet") and name[6:].isdigit():
        if config.channels:
            raise TrunkError("explicit channels (a pruned trunk) are only supported for alexnet_bn")
        trunk = ResNetTrunk(int(name[6:]), config.input_size, config.resnet_width, config.resnet_stem_stride)
    else:
        raise TrunkError(f"unknown trunk {config.name!r}; choose alexnet_bn, vgg_bn, resnet10, resnet18, resnet34 or resnet50")
    if config.checkpoint:
        _load_checkpoint(trunk, config.checkpoint)
    return trunk


def feature_shape(trunk: nn.Module, input_size: int) -> tuple[int, int, int]:
    """(C, H, W) of the trunk's output for one input_size x input_size face."""
    with torch.no_grad(), eval_mode(trunk):
        out = trunk(torch.zeros(1, 3, input_size, input_size))
    return tuple(out.shape[1:])
