"""Dataset readers by name, so configs and the command line can say `celeba` or `adience`.

Every reader has the signature `reader(root, split=None, **options) -> FaceDataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from data_prep.datasets.adience import load_adience
from data_prep.datasets.base import FaceDataset
from data_prep.datasets.celeba import load_celeba
from data_prep.datasets.chalearn import load_chalearn_lap, load_fotw
from data_prep.datasets.folder_csv import load_folder_csv
from data_prep.datasets.lfw import load_lfw
from data_prep.datasets.morph import load_morph
from data_prep.datasets.utkface import load_utkface
from engine.errors import FaceganError

__all__ = ["DATASETS", "UnknownDatasetError", "available_datasets", "get_reader", "load_dataset"]

def _load_synthetic(root: str | Path, split: str | None = None, *, domain: str | None = None) -> FaceDataset:
    """The built-in synthetic faces (`data_prep.synthetic`), imported on use: that module
    builds on this package, so importing it here at load time would be circular."""
    from data_prep.synthetic import load_synthetic

    return load_synthetic(root, domain=domain, split=split)


DATASETS: dict[str, Callable[..., FaceDataset]] = {
    "celeba": load_celeba,
    "lfw": load_lfw,
    "utkface": load_utkface,
    "morph": load_morph,
    "chalearn_lap": load_chalearn_lap,
    "fotw": load_fotw,
    "adience": load_adience,
    "folder_csv": load_folder_csv,
    "synthetic": _load_synthetic,
}
# Other names people use for the same readers.
_ALIASES = {
    "lfwa": "lfw",
    "lfw-a": "lfw",
    "morph2": "morph",
    "morph_ii": "morph",
    "chalearn": "chalearn_lap",
    "folder": "folder_csv",
    "csv": "folder_csv",
}


class UnknownDatasetError(FaceganError, KeyError):
    """No reader is registered under this name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def available_datasets() -> list[str]:
    """The registered reader names (aliases not included), sorted."""
    return sorted(DATASETS)


def get_reader(name: str) -> Callable[..., FaceDataset]:
    """The reader registered as `name` (or one of its aliases, e.g. 'lfwa', 'morph2')."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return DATASETS[key]


def load_dataset(name: str, root: Path | str, **kwargs: Any) -> FaceDataset:
    """Read dataset `name` from `root`; `kwargs` go to its reader (e.g. split='test')."""
    return get_reader(name)(root, **kwargs)
