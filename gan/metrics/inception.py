"""The standard FID Inception network, loaded from a local weights file only.

Network: torch-fidelity's `FeatureExtractorInceptionV3` ("inception-v3-compat"), the PyTorch
port of the TensorFlow Inception graph of 2015-12-05 that the original FID code (Heusel et
al., TTUR) uses. Published FIDs are computed with it; torchvision's ImageNet Inception gives
different numbers, which is why it is not used here. Features: the 2048-d pool3 output.

Input protocol (applied inside the network, so callers pass images at their own size): uint8
RGB (N, 3, H, W) -> float -> bilinear resize to 299 x 299 with torch-fidelity's
TensorFlow-1.x-compatible interpolation (`interpolate_bilinear_2d_like_tensorflow1x`,
align_corners=False; it matches TF's `tf.image.resize_bilinear`, not torch's own bilinear) ->
(x - 128) / 128. Do not resize the images beforehand: resizing twice changes the number.

Weights: `weights-inception-2015-12-05-6726825d.pth` (95 MB) from torch-fidelity's release
page. They are never downloaded by this code (runs are offline); `find_inception_weights`
looks, in order, at

1. `$FACEGAN_INCEPTION_WEIGHTS`, a path to the file (when set, it must exist);
2. the torch hub checkpoint cache, `torch.hub.get_dir()/checkpoints/` (that is
   `$TORCH_HOME/hub/checkpoints/`, by default `~/.cache/torch/hub/checkpoints/`), where
   torch-fidelity itself would have cached it,

and otherwise raises `InceptionWeightsError` saying what to download from where and where to
put it. The file name carries the first 8 hex digits of its sha256 (torch hub's convention);
the file's hash is checked against it, so a truncated or different file cannot silently
produce FIDs that are not comparable with published ones (`verify_hash=False` skips the check
for a deliberately different file, e.g. in tests).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from engine.errors import FaceganError
from gan.metrics.batch import as_uint8_nchw

__all__ = [
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_SHA256_PREFIX",
    "INCEPTION_WEIGHTS_URL",
    "InceptionFeatureExtractor",
    "InceptionWeightsError",
    "find_inception_weights",
    "inception_weights_candidates",
    "sha256_file",
]

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_SHA256_PREFIX = "6726825d"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)
INCEPTION_WEIGHTS_ENV = "FACEGAN_INCEPTION_WEIGHTS"
_FEATURE_LAYER = "2048"
_INPUT_SIZE = 299


class InceptionWeightsError(FaceganError):
    """The FID Inception weights are missing, unreadable or not the expected file."""


def _hub_checkpoint_dir() -> Path:
    # torch.hub.get_dir() reads $TORCH_HOME / $XDG_CACHE_HOME at call time, so the lookup
    # follows the environment of the moment instead of the one at import.
    return Path(torch.hub.get_dir()) / "checkpoints"


def inception_weights_candidates() -> list[Path]:
    """Where `find_inception_weights` looks, in order."""
    candidates = []
    env = os.environ.get(INCEPTION_WEIGHTS_ENV)
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(_hub_checkpoint_dir() / INCEPTION_WEIGHTS_FILE)
    return candidates


def _missing_message(looked: list[Path]) -> str:
    target = _hub_checkpoint_dir() / INCEPTION_WEIGHTS_FILE
    places = "\n".join(f"  - {path}" for path in looked)
    return (
        "FID Inception weights not found. Looked in:\n"
        f"{places}\n"
        f"Download {INCEPTION_WEIGHTS_URL}\n"
        f"and save it as {target}\n"
        f"(or anywhere, and set {INCEPTION_WEIGHTS_ENV} to the file's path). "
        "facegan never downloads it by itself."
    )


def find_inception_weights() -> Path:
    """The weights file (see the module docstring for the search order), or InceptionWeightsError."""
    env = os.environ.get(INCEPTION_WEIGHTS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise InceptionWeightsError(
                f"{INCEPTION_WEIGHTS_ENV}={env} does not name an existing file.\n" + _missing_message([path])
            )
        return path
    path = _hub_checkpoint_dir() / INCEPTION_WEIGHTS_FILE
    if path.is_file():
        return path
    raise InceptionWeightsError(_missing_message([path]))


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_state_dict(path: Path) -> dict:
    try:
        # weights_only: the file is data, so refuse pickled code before torch-fidelity (which
        # loads with weights_only=False) ever sees it.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a bad file
        raise InceptionWeightsError(
            f"{path}: cannot be read as a PyTorch state dict ({type(error).__name__}: {error}). "
            f"Download it again from {INCEPTION_WEIGHTS_URL}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InceptionWeightsError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


class InceptionFeatureExtractor:
    """Callable: uint8 image batch -> (N, 2048) float32 pool3 features on the CPU.

    Accepts numpy (N, H, W, 3) or torch (N, 3, H, W) uint8 batches of any size (the network
    resizes to 299 x 299 itself; module docstring). Loading happens in the constructor.

    weights_path: the weights file; None searches as `find_inception_weights` does.
    device: where the network runs ("cpu", "cuda", "cuda:1", ...).
    verify_hash: check the file's sha256 starts with INCEPTION_WEIGHTS_SHA256_PREFIX.
    """

    name = "inception-v3-compat"

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        verify_hash: bool = True,
    ) -> None:
        path = Path(weights_path).expanduser() if weights_path is not None else find_inception_weights()
        if not path.is_file():
            raise InceptionWeightsError(_missing_message([path]))
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as error:
            raise InceptionWeightsError(
                f"the FID Inception network needs torch-fidelity ({error}); install it with "
                "pip install 'torch-fidelity==0.4.0'"
            ) from None
        self.weights_path = path.resolve()
        self.weights_sha256 = sha256_file(self.weights_path)
        if verify_hash and not self.weights_sha256.startswith(INCEPTION_WEIGHTS_SHA256_PREFIX):
            raise InceptionWeightsError(
                f"{self.weights_path}: sha256 {self.weights_sha256[:16]}... does not start with "
                f"{INCEPTION_WEIGHTS_SHA256_PREFIX}, so it is not {INCEPTION_WEIGHTS_FILE} (truncated download?). "
                f"Download it again from {INCEPTION_WEIGHTS_URL}"
            )
        _load_state_dict(self.weights_path)  # validates; torch-fidelity then loads the same file itself
        try:
            # An explicit path is what keeps torch-fidelity from downloading (its None default
            # fetches the URL).
            model = FeatureExtractorInceptionV3(
                self.name, [_FEATURE_LAYER], feature_extractor_weights_path=str(self.weights_path)
            )
        except RuntimeError as error:  # load_state_dict: missing/unexpected keys, shape mismatch
            raise InceptionWeightsError(
                f"{self.weights_path}: does not match the FID Inception architecture ({str(error).splitlines()[0]})"
            ) from None
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, images) -> torch.Tensor:
        batch = as_uint8_nchw(images, "InceptionFeatureExtractor").to(self.device)
        (features,) = self.model(batch)
        return features.float().cpu()

    def protocol(self) -> dict:
        """What a FID computed with this extractor depends on; written into every result."""
        return {
            "feature_extractor": f"torch-fidelity {self.name} (TF Inception 2015-12-05), pool3",
            "feature_dim": 2048,
            "weights_file": self.weights_path.name,
            "weights_sha256_prefix": self.weights_sha256[:12],
            "weights_verified": self.weights_sha256.startswith(INCEPTION_WEIGHTS_SHA256_PREFIX),
            "resize": f"inside the network: bilinear to {_INPUT_SIZE}x{_INPUT_SIZE}, TensorFlow-1.x compatible "
            "(torch_fidelity interpolate_bilinear_2d_like_tensorflow1x, align_corners=False), then (x - 128) / 128",
            "input": "uint8 RGB at the images' own size",
        }
