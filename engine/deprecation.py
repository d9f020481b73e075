"""Old import paths that keep working for one release, with a warning that names the new ones.

Facegan 0.2 moved modules (`gan.sr_step` is now `gan.sr.step` and `gan.sr.inference`, say).
A package lists its old module names once, in its `__init__`:

    alias_modules({"gan.sr_step": ("gan.sr.step", "gan.sr.inference"), ...})

and `import gan.sr_step` or `from gan.sr_step import SRStep` then gives a stand-in module that
finds each name in the new modules, in order, after one FutureWarning. A module that kept its
name but lost some of its contents to another one uses `moved_names` as its `__getattr__`.
No file is left at the old path.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Any, Callable

__all__ = ["REMOVED_IN", "alias_modules", "moved_names"]

REMOVED_IN = "0.3"

_ALIASES: dict[str, tuple[str, ...]] = {}


class _AliasModule(types.ModuleType):
    """Stands in for a moved module: attributes come from the modules that took its contents."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name, f"facegan 0.1's {name}, now {', '.join(targets)}")
        self.__path__: list[str] = []  # so that old submodule paths (gan.models.dcgan) resolve too
        self._targets = targets

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, attribute):
                return getattr(module, attribute)
        raise AttributeError(f"{self.__name__} (now {', '.join(self._targets)}) has no attribute {attribute!r}")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for target in self._targets:
            names.update(getattr(importlib.import_module(target), "__all__", ()))
        return sorted(names)


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path=None, target=None):
        if fullname in _ALIASES:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec) -> types.ModuleType:
        targets = _ALIASES[spec.name]
        warnings.warn(f"{spec.name} has moved to {' and '.join(targets)}; the old name goes in facegan {REMOVED_IN}",
                      FutureWarning, stacklevel=2)
        return _AliasModule(spec.name, targets)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


_FINDER = _AliasFinder()


def alias_modules(aliases: dict[str, tuple[str, ...]]) -> None:
    """Make each old module name importable as a stand-in for its new modules."""
    _ALIASES.update({old: tuple(new) for old, new in aliases.items()})
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)


def moved_names(module: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for names that moved to other modules ({name: new module})."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} has moved to {moved[name]}.{name}; the old place goes in facegan {REMOVED_IN}",
                      FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__
