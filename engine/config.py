"""Dataclass configs as the single source of truth, with YAML presets and `a.b=c` overrides.

Every run config calls its engine section `trainer`; facegan 0.1 called it `train` in the GAN
and SR configs. Files, overrides and checkpoints that use the old name load under the new one,
with a one-line warning.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from engine.errors import FaceganError

__all__ = ["ConfigError", "to_dict", "from_dict", "load_config", "save_config", "apply_overrides", "plain_data",
           "without_later_defaults"]

T = TypeVar("T")

log = logging.getLogger(__name__)


class ConfigError(FaceganError, ValueError):
    """A preset or an override does not fit the config dataclass."""


def to_dict(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    if isinstance(config, Path):
        return str(config)
    return config


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} fits none of {annotation}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, inner, f"{where}.{k}") for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float, str):
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
    if annotation is Path:
        return Path(value)
    return value


def without_later_defaults(data: Any, later: dict[str, Any]) -> Any:
    """`data` (a `to_dict` tree) without the keys of options added later that hold the value they
    default to: what a fingerprint hashes, so that runs and caches recorded before an option
    existed keep their fingerprints (and resume, or are reused) while it is left at its default."""
    if isinstance(data, dict):
        return {k: without_later_defaults(v, later) for k, v in data.items() if not (k in later and v == later[k])}
    return data


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a mapping; unknown keys are an error, not silently dropped."""
    data = _rename_legacy_sections(cls, data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults from the dataclass, then the YAML preset, then `a.b=c` overrides."""
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        _deep_update(data, _rename_legacy_sections(cls, loaded, str(path)))
    _fill_entry_defaults(cls, data)
    data = apply_overrides(data, _renamed_overrides(cls, overrides or []))
    return from_dict(cls, data)


def _fill_entry_defaults(cls: type, data: Any) -> None:
    """Give each entry of a mapping of dataclasses (a study's domains, a run's datasets) the
    defaults its preset left out, so that an override can set one (`domains.wild.root=...`)."""
    if not dataclasses.is_dataclass(cls) or not isinstance(data, dict):
        return
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value, annotation = data.get(f.name), hints[f.name]
        if dataclasses.is_dataclass(annotation):
            _fill_entry_defaults(annotation, value)
            continue
        args = typing.get_args(annotation)
        inner = args[1] if typing.get_origin(annotation) is dict and len(args) == 2 else None
        if not (dataclasses.is_dataclass(inner) and isinstance(value, dict)):
            continue
        try:
            defaults = to_dict(inner())
        except (TypeError, FaceganError):  # an entry type without defaults for every field
            continue
        for key, entry in value.items():
            if isinstance(entry, dict):
                merged = copy.deepcopy(defaults)
                _deep_update(merged, entry)
                value[key] = merged
                _fill_entry_defaults(inner, merged)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r}")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


# Section names of facegan 0.1 -> today's, read wherever a config has the new one and not the old.
_RENAMED_SECTIONS = {"train": "trainer"}


def _legacy_sections(cls: type) -> dict[str, str]:
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return {old: new for old, new in _RENAMED_SECTIONS.items() if new in names and old not in names}


def _rename_legacy_sections(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    renames = {old: new for old, new in _legacy_sections(cls).items() if old in data}
    if not renames:
        return data
    data = dict(data)
    for old, new in renames.items():
        if new in data:
            raise ConfigError(f"{where}: both {old!r} and {new!r} are given; {old!r} is the old name of {new!r}")
        log.warning("%s: section %r is now called %r (facegan 0.2); read as %r", where, old, new, new)
        data[new] = data.pop(old)
    return data


def _renamed_overrides(cls: type, overrides: list[str]) -> list[str]:
    renamed = []
    for item in overrides:
        for old, new in _legacy_sections(cls).items():
            if item.startswith(f"{old}."):
                log.warning("override %s: section %r is now called %r (facegan 0.2)", item, old, new)
                item = new + item[len(old):]
        renamed.append(item)
    return renamed


def plain_data(value: Any, non_finite_as_none: bool = False) -> Any:
    """Only plain containers and scalars (for JSON files and weights-only checkpoints): tuples
    become lists, mapping keys strings, numpy and torch values numbers and lists, anything else
    its str; with `non_finite_as_none`, NaN and infinities become None (JSON has no NaN)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = to_dict(value)
    if isinstance(value, Mapping):
        return {str(k): plain_data(v, non_finite_as_none) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v, non_finite_as_none) for v in value]
    if isinstance(value, float) and non_finite_as_none and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    tolist = getattr(value, "tolist", None)  # numpy and torch scalars and arrays
    if callable(tolist) and hasattr(value, "dtype"):
        return plain_data(tolist(), non_finite_as_none)
    return str(value)


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
