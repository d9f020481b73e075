"""LPIPS (Zhang et al. 2018) from local files only: the perceptual loss and metric of SR.

The `lpips` package (0.1.4) ships its calibrated linear layers (`lpips/weights/v0.1/<net>.pth`)
but builds its backbone with `torchvision.models.<net>(pretrained=True)`, which downloads the
ImageNet weights. Runs here are offline, so `load_lpips` builds the model with the backbone
download disabled (`pnet_rand=True`), then loads the backbone from a local torchvision file,
looked for in this order:

1. `$FACEGAN_LPIPS_BACKBONE`, a path to the file (when set, it must exist);
2. the torch hub checkpoint cache, `torch.hub.get_dir()/checkpoints/<file>` (that is
   `$TORCH_HOME/hub/checkpoints/`, by default `~/.cache/torch/hub/checkpoints/`), where
   torchvision itself caches it,

with <file> the torchvision release file of the backbone (`BACKBONE_FILES`: alexnet-owt-7be5be79.pth
for the default "alex"). Otherwise it raises `LPIPSWeightsError` saying which file to download
from where and where to put it. The file's `features.*` tensors are checked against the
backbone's (a wrong file fails with a clear message) and copied into LPIPS's feature slices. As for the
FID Inception, the first 8 hex digits of the file's sha256 must match the name's (torch hub's
convention) unless `verify_hash=False`, so numbers stay comparable with published LPIPS.

LPIPS takes RGB images in [-1, 1]; `LPIPSMetric` converts uint8 batches and returns one distance
per image pair (lower is more similar).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from engine.checkpoint import file_sha256
from engine.errors import FaceganError

__all__ = [
    "LPIPS_BACKBONE_ENV",
    "BACKBONE_FILES",
    "BACKBONE_URLS",
    "LPIPSWeightsError",
    "LPIPSMetric",
    "lpips_backbone_candidates",
    "find_lpips_backbone",
    "lpips_unavailable_reason",
    "load_lpips",
]

LPIPS_BACKBONE_ENV = "FACEGAN_LPIPS_BACKBONE"
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
BACKBONE_URLS = {net: f"https://download.pytorch.org/models/{name}" for net, name in BACKBONE_FILES.items()}
_TORCHVISION_BUILDERS = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


class LPIPSWeightsError(FaceganError):
    """The LPIPS backbone weights are missing, unreadable or not the expected file."""


def _check_net(net: str) -> None:
    if net not in BACKBONE_FILES:
        raise LPIPSWeightsError(f"unknown LPIPS backbone {net!r}; choose one of {sorted(BACKBONE_FILES)}")


def _hub_checkpoint_dir() -> Path:
    # Read at call time: $TORCH_HOME may change after import (tests, notebooks).
    return Path(torch.hub.get_dir()) / "checkpoints"


def lpips_backbone_candidates(net: str = "alex") -> list[Path]:
    """Where `find_lpips_backbone` looks, in order."""
    _check_net(net)
    candidates = []
    env = os.environ.get(LPIPS_BACKBONE_ENV)
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(_hub_checkpoint_dir() / BACKBONE_FILES[net])
    return candidates


def _missing_message(net: str, looked: list[Path]) -> str:
    target = _hub_checkpoint_dir() / BACKBONE_FILES[net]
    places = "\n".join(f"  - {path}" for path in looked)
    return (
        f"LPIPS ({net}) backbone weights not found. Looked in:\n{places}\n"
        f"Download {BACKBONE_URLS[net]}\n"
        f"and save it as {target}\n"
        f"(or anywhere, and set {LPIPS_BACKBONE_ENV} to the file's path). facegan never downloads it by itself."
    )


def find_lpips_backbone(net: str = "alex") -> Path:
    """The backbone file (see the module docstring for the search order), or LPIPSWeightsError."""
    _check_net(net)
    env = os.environ.get(LPIPS_BACKBONE_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise LPIPSWeightsError(f"{LPIPS_BACKBONE_ENV}={env} does not name an existing file.\n" + _missing_message(net, [path]))
        return path
    path = _hub_checkpoint_dir() / BACKBONE_FILES[net]
    if path.is_file():
        return path
    raise LPIPSWeightsError(_missing_message(net, [path]))


def lpips_unavailable_reason(net: str = "alex") -> str | None:
    """None when LPIPS can be built here, else the reason (for reports that skip the metric)."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return "the lpips package is not installed (pip install lpips)"
    try:
        find_lpips_backbone(net)
    except LPIPSWeightsError as exc:
        return str(exc)
    return None


def _backbone_state(path: Path, net: str, verify_hash: bool) -> dict[str, torch.Tensor]:
    """The `features.*` tensors of a torchvision weights file (all LPIPS reads)."""
    if verify_hash:
        expected = BACKBONE_FILES[net].rsplit("-", 1)[-1].split(".")[0]
        actual = file_sha256(path)[:8]
        if actual != expected:
            raise LPIPSWeightsError(
                f"{path}: sha256 starts with {actual}, expected {expected} ({BACKBONE_FILES[net]}); the file is "
                f"truncated or a different network. Download it again from {BACKBONE_URLS[net]}"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise LPIPSWeightsError(f"{path}: cannot be read as a PyTorch state dict ({type(exc).__name__}: {exc}); "
                                f"download it again from {BACKBONE_URLS[net]}") from None
    if not isinstance(state, dict):
        raise LPIPSWeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    # The classifier (most of the file for AlexNet and VGG) is not needed, so a file holding
    # just the `features.*` entries is accepted too.
    return {k: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.") and isinstance(v, torch.Tensor)}


def load_lpips(net: str = "alex", device: str | torch.device = "cpu", backbone: str | Path | None = None,
               verify_hash: bool = True) -> nn.Module:
    """A frozen, eval-mode `lpips.LPIPS(net)` with its backbone from a local file.

    backbone: the torchvision weights file; default: `find_lpips_backbone(net)`.
    """
    _check_net(net)
    try:
        import lpips
    except ImportError:
        raise LPIPSWeightsError("LPIPS needs the lpips package, which is not installed (pip install lpips)") from None
    path = Path(backbone).expanduser() if backbone is not None else find_lpips_backbone(net)
    if not path.is_file():
        raise LPIPSWeightsError(_missing_message(net, [path]))
    features = _backbone_state(path, net, verify_hash)
    with warnings.catch_warnings():
        # torchvision warns about the deprecated `pretrained` argument lpips passes it
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    # lpips keeps torchvision's `features` modules under their indices, split into slices:
    # features.<i>.<param> lives at slice<k>.<i>.<param>.
    own = model.net.state_dict()
    mapped = {}
    for key, value in own.items():
        _, index, rest = key.split(".", 2)
        source = f"features.{index}.{rest}"
        found = features.get(source)
        if found is None or found.shape != value.shape:
            what = "has no" if found is None else f"has a {tuple(found.shape)} tensor for"
            raise LPIPSWeightsError(f"{path}: not the weights of torchvision's {_TORCHVISION_BUILDERS[net]}: it {what} "
                                    f"{source} (expected {tuple(value.shape)})")
        mapped[key] = found
    model.net.load_state_dict(mapped)
    model.requires_grad_(False)
    return model.eval().to(device)


class LPIPSMetric:
    """Per-pair LPIPS distances of uint8 (or [-1, 1] float) image batches (N, 3, H, W)."""

    def __init__(self, net: str = "alex", device: str | torch.device = "cpu", backbone: str | Path | None = None,
                 verify_hash: bool = True):
        self.net = net
        self.device = torch.device(device)
        self.path = Path(backbone) if backbone is not None else find_lpips_backbone(net)
        self.model = load_lpips(net, self.device, self.path, verify_hash)

    @staticmethod
    def _prepare(images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            return images.float() / 127.5 - 1.0
        return images.float()

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        if a.shape != b.shape:
            raise ValueError(f"LPIPS: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        out = []
        for start in range(0, len(a), batch_size):
            x = self._prepare(a[start:start + batch_size]).to(self.device)
            y = self._prepare(b[start:start + batch_size]).to(self.device)
            out.append(self.model(x, y).flatten().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def protocol(self) -> dict:
        return {
            "metric": f"LPIPS v0.1 ({self.net}), lpips package linear layers",
            "backbone_file": str(self.path),
            "input": "RGB in [-1, 1] at the HR size, no resize",
        }
