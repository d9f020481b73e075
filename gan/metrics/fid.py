"""FID / KID (and FD-face / KID-face) from image sets, with the protocol in every result.

`compute_fid_kid(real, fake, extractor)`:

- real, fake: a folder of images (read with `data_prep.images.load_rgb`, sorted by path,
  recursively), a single uint8 batch, or an iterable of uint8 batches (numpy (N, H, W, 3) or
  torch (N, 3, H, W); see `gan.metrics.batch`), e.g. a generator's samples converted with
  `gan.metrics.to_uint8`.
- extractor: any callable uint8 batch (torch (N, 3, H, W)) -> (N, D) features. None means the
  FID Inception (`InceptionFeatureExtractor`, loaded from local weights; it resizes to 299 x 299
  itself with TF-1.x-compatible bilinear interpolation, so images go in at their own size).
  `FaceEmbedder()` gives FD-face / KID-face. An `nn.Module` runs on the device of its
  parameters, in eval mode, under inference_mode; it receives uint8 and converts itself.
- The result holds the numbers and the protocol: the extractor's `protocol()` (name, weights
  file and sha256 prefix, resize), sample counts, KID subsets, the seed and the reference the
  caller names (e.g. "CelebA test split").

Numbers from different extractors, resizes or sample counts are not comparable (FID is biased
upwards at small N: use the same N for every model you compare, ideally >= 10,000 for FID).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from gan.metrics.batch import ImageBatchError, as_uint8_nchw
from gan.metrics.frechet import (
    DEFAULT_KID_SUBSETS,
    DEFAULT_SEED,
    FeatureError,
    FeatureStatistics,
    as_features,
    feature_statistics,
    frechet_distance,
    kernel_distance,
)

__all__ = [
    "compute_fid_kid",
    "extract_features",
    "extractor_protocol",
    "fid_kid_from_features",
    "iter_image_batches",
]


def _folder_batches(folder: Path, batch_size: int, max_samples: int | None) -> Iterator[torch.Tensor]:
    from data_prep.images import list_images, load_rgb

    paths = list_images(folder)
    if not paths:
        raise ImageBatchError(f"{folder}: no image files found")
    if max_samples is not None:
        paths = paths[:max_samples]
    pending: list[np.ndarray] = []
    for path in paths:
        image = load_rgb(path)  # ImageLoadError names the file and the reason
        # A batch holds one size; a folder of mixed sizes is sent in runs of equal size, since
        # resizing here would change the protocol the extractor documents.
        if pending and (image.shape != pending[0].shape or len(pending) == batch_size):
            yield as_uint8_nchw(np.stack(pending))
            pending = []
        pending.append(image)
    if pending:
        yield as_uint8_nchw(np.stack(pending))


def iter_image_batches(source, batch_size: int = 64, max_samples: int | None = None, what: str = "images") -> Iterator[torch.Tensor]:
    """uint8 (N, 3, H, W) batches of at most `batch_size` from a folder, one batch, or an
    iterable of batches (larger batches are split, so one big array is fine).

    max_samples: stop after this many images (the last batch is cut).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise ImageBatchError(f"{what}: {folder} is not a folder")
        yield from _folder_batches(folder, batch_size, max_samples)
        return
    if isinstance(source, (np.ndarray, torch.Tensor)):
        source = [source]
    elif not isinstance(source, Iterable):
        raise ImageBatchError(f"{what}: expected a folder, an image batch or an iterable of batches, got {type(source).__name__}")
    seen = 0
    for index, batch in enumerate(source):
        images = as_uint8_nchw(batch, f"{what} (batch {index})")
        if max_samples is not None:
            images = images[: max_samples - seen]
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            seen += len(chunk)
            yield chunk
        if max_samples is not None and seen >= max_samples:
            return


def _module_device(extractor) -> torch.device | None:
    if isinstance(extractor, torch.nn.Module):
        for tensor in extractor.parameters():
            return tensor.device
        for tensor in extractor.buffers():
            return tensor.device
    return None


def extract_features(
    source,
    extractor: Callable,
    batch_size: int = 64,
    max_samples: int | None = None,
    what: str = "images",
) -> np.ndarray:
    """(N, D) float64 features of every image in `source` (see `iter_image_batches`)."""
    device = _module_device(extractor)
    was_training = isinstance(extractor, torch.nn.Module) and extractor.training
    if isinstance(extractor, torch.nn.Module):
        extractor.eval()  # BatchNorm/dropout in train mode would make features batch-dependent
    chunks = []
    try:
        with torch.inference_mode():
            for batch in iter_image_batches(source, batch_size, max_samples, what):
                if device is not None:
                    batch = batch.to(device)
                features = extractor(batch)
                features = as_features(features, f"{what}: extractor output", min_samples=1)
                if features.shape[0] != batch.shape[0]:
                    raise FeatureError(
                        f"{what}: the extractor returned {features.shape[0]} feature rows for a batch of {batch.shape[0]} images"
                    )
                chunks.append(features)
    finally:
        if was_training:
            extractor.train()
    if not chunks:
        raise ImageBatchError(f"{what}: no images")
    return np.concatenate(chunks)


def _fingerprint_module(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def extractor_protocol(extractor: Callable) -> dict:
    """The extractor's own `protocol()` when it has one, else what can be said about it."""
    if hasattr(extractor, "protocol"):
        return dict(extractor.protocol())
    name = getattr(extractor, "name", None) or type(extractor).__name__
    if name == "function":
        name = getattr(extractor, "__qualname__", "function")
    protocol = {"feature_extractor": str(name), "resize": "none (the extractor gets the images at their own size)"}
    if isinstance(extractor, torch.nn.Module):
        protocol["weights_sha256_prefix"] = _fingerprint_module(extractor)  # of the state dict
    return protocol


def fid_kid_from_features(
    real_features,
    fake_features,
    kid: bool = True,
    kid_subsets: int = DEFAULT_KID_SUBSETS,
    kid_subset_size: int | None = None,
    seed: int = DEFAULT_SEED,
    real_statistics: FeatureStatistics | None = None,
) -> dict:
    """FD and KID from features; real_statistics (precomputed) may replace the real FD fit.

    Returns {"fd", "kid_mean", "kid_std", "num_real", "num_fake", "kid": {...}} (KID entries
    None when kid=False).
    """
    fake = as_features(fake_features, "fake features")
    real = as_features(real_features, "real features") if real_features is not None else None
    if real_statistics is None:
        if real is None:
            raise FeatureError("fid_kid_from_features: need real features or real statistics")
        real_statistics = feature_statistics(real, "real features")
    fd = frechet_distance(real_statistics, feature_statistics(fake, "fake features"))
    result = {"fd": fd, "kid_mean": None, "kid_std": None, "num_real": real_statistics.num_samples,
              "num_fake": fake.shape[0], "kid": None}
    if kid:
        if real is None:
            raise FeatureError("fid_kid_from_features: KID needs the real features, not only their statistics")
        kd = kernel_distance(real, fake, n_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
        result.update(kid_mean=kd.mean, kid_std=kd.std, kid=kd.to_dict())
    return result


def _describe_source(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve())
    return "in-memory batches"


def compute_fid_kid(
    real,
    fake,
    extractor: Callable | None = None,
    *,
    batch_size: int = 64,
    max_samples: int | None = None,
    kid: bool = True,
    kid_subsets: int = DEFAULT_KID_SUBSETS,
    kid_subset_size: int | None = None,
    seed: int = DEFAULT_SEED,
    reference: str | None = None,
    device: str | torch.device = "cpu",
    real_cache_dir: str | Path | None = None,
) -> dict:
    """FD (FID with the default extractor) and KID between two image sets, with the protocol.

    extractor: None -> `InceptionFeatureExtractor(device=device)` (FID/KID proper);
        `FaceEmbedder()` -> FD-face/KID-face; any callable batch -> (N, D) features.
    max_samples: at most this many images from each set.
    kid_subset_size: None -> min(1000, num_real, num_fake).
    reference: a description of the real set, recorded as given (e.g. "CelebA test split").
    real_cache_dir: keep the real set's features there (`gan.metrics.feature_cache`) when `real`
        is in-memory batches, so that scoring more checkpoints against it extracts them once.

    Returns {"fd", "kid_mean", "kid_std", "num_real", "num_fake", "protocol"}, where protocol
    holds the extractor's protocol, the sources, the sample counts, the KID sampling and the
    reference.
    """
    if extractor is None:
        from gan.metrics.inception import InceptionFeatureExtractor

        extractor = InceptionFeatureExtractor(device=device)
    protocol = extractor_protocol(extractor)  # once: it may hash the extractor's weights
    if real_cache_dir is not None and isinstance(real, (list, tuple)):
        from gan.metrics.feature_cache import cached_features

        depends = {"protocol": dict(protocol), "batch_size": batch_size, "max_samples": max_samples,
                   "device": torch.device(device).type}  # a GPU's kernels round otherwise
        real_features = cached_features(real, depends, lambda: extract_features(real, extractor, batch_size, max_samples, "real"),
                                        real_cache_dir, max_rows=max_samples)
    else:
        real_features = extract_features(real, extractor, batch_size, max_samples, "real")
    fake_features = extract_features(fake, extractor, batch_size, max_samples, "fake")
    if real_features.shape[1] != fake_features.shape[1]:
        raise FeatureError(f"real and fake features differ in size ({real_features.shape[1]} vs {fake_features.shape[1]})")
    numbers = fid_kid_from_features(
        real_features, fake_features, kid=kid, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed
    )
    protocol.setdefault("feature_dim", int(real_features.shape[1]))
    protocol.update(
        fd="Frechet distance, covariance square root by symmetric eigendecomposition (float64)",
        kid=numbers.pop("kid"),
        num_real=numbers["num_real"],
        num_fake=numbers["num_fake"],
        max_samples=max_samples,
        real_source=_describe_source(real),
        fake_source=_describe_source(fake),
        reference=reference,
    )
    numbers["protocol"] = protocol
    return numbers
