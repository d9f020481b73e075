"""Presets: YAML configs that ship inside each family's package, found by name from any folder.

    resolve_preset("dcgan64-cpu", "gan.generators")        # <site-packages>/gan/generators/presets/dcgan64-cpu.yaml
    resolve_preset("my/run.yaml", "gan.generators")        # a file of your own, as given
    preset_names("gan.generators")                         # ["began64", "began64-cpu", ...]

A value that names an existing file is that file. Otherwise it is a preset name, with or
without ".yaml". Paths of facegan 0.1.0, whose presets lived in a `configs/<family>/` folder of
the checkout (`configs/sr/x4-16to64-cpu.yaml`), still find the shipped preset of that name.
"""
from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

from engine.config import ConfigError

__all__ = ["PRESETS_FOLDER", "shipped_folder", "shipped_names", "preset_names", "resolve_preset", "presets_help"]

log = logging.getLogger(__name__)

PRESETS_FOLDER = "presets"


def shipped_folder(package: str, folder: str = PRESETS_FOLDER) -> Path:
    """A folder of files that ship inside `package` (its presets, say, or trunk weights)."""
    return Path(str(resources.files(package) / folder))


def shipped_names(package: str, folder: str, suffix: str) -> list[str]:
    """The names (without `suffix`) of the `suffix` files that ship in `package`'s `folder`."""
    path = shipped_folder(package, folder)
    return sorted(p.stem for p in path.glob(f"*{suffix}")) if path.is_dir() else []


def preset_names(package: str) -> list[str]:
    """The presets `package` ships, by name."""
    return shipped_names(package, PRESETS_FOLDER, ".yaml")


def resolve_preset(value: str | os.PathLike, package: str) -> Path:
    """The YAML file `value` names: an existing file, or a preset shipped in `package`."""
    given = Path(value).expanduser()
    if given.is_file():
        return given
    name = given.name[:-len(".yaml")] if given.name.endswith(".yaml") else given.name
    shipped = shipped_folder(package) / f"{name}.yaml"
    names = preset_names(package)
    if name in names:
        if given.parent != Path("."):
            log.warning("%s is not a file; using the preset %r that ships with facegan (name presets by name: "
                        "--config %s)", value, name, name)
        return shipped
    raise ConfigError(f"no config file {value} and no preset named {name!r}; presets: {', '.join(names) or 'none'}")


def presets_help(package: str) -> str:
    """A --config help text that lists the presets."""
    return ("a preset name or a YAML file of your own; presets: " + ", ".join(preset_names(package))
            + " (every setting not in it keeps its default)")
