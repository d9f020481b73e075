"""The resumable folder job: many inputs, one output file each, and a CSV manifest that can be
trusted after a crash.

The rule every such job (`facegan align`, `facegan sr apply`) follows:
1. each output is written atomically (a temporary file beside it, then a rename), so a kill
   leaves a whole file or none;
2. only then is its manifest row appended, flushed and fsynced (`ManifestAppender`), so every
   row names a complete file;
3. a rerun reads the manifest back (`read_rows`), dropping a last row cut short by a kill,
   skips the inputs it lists, and processes only the rest.
"""
from __future__ import annotations

import csv
import errno
import io
import logging
import os
from pathlib import Path
from typing import Sequence

from engine.checkpoint import atomic_write_bytes
from engine.errors import DiskFullError, FaceganError
from engine.faults import fault_point

log = logging.getLogger(__name__)

__all__ = ["ManifestError", "read_rows", "repair_manifest", "ManifestAppender", "unique_output_names"]


class ManifestError(FaceganError):
    """A manifest that this job did not write (other columns)."""


def _complete_text(path: Path) -> str:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]  # a row cut short by a kill
    return data.decode("utf-8")


def read_rows(path: str | os.PathLike, columns: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The complete rows of a manifest (none when it does not exist). With `columns`, a
    manifest whose header differs is refused."""
    path = Path(path)
    if not path.is_file():
        return []
    reader = csv.DictReader(io.StringIO(_complete_text(path)))
    if columns is not None and reader.fieldnames is not None and list(reader.fieldnames) != list(columns):
        raise ManifestError(f"{path}: unexpected columns {reader.fieldnames}, expected {list(columns)}; it was written "
                            "by another job or version (use a new output folder)")
    return list(reader)


def repair_manifest(path: str | os.PathLike) -> None:
    """Cut a partial last line (a kill mid-write), so that appended rows start on a fresh line."""
    path = Path(path)
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            kept = data[: data.rfind(b"\n") + 1]
            log.warning("%s: dropped a last line cut short (%d bytes) by an interrupted run; its input is done again",
                        path, len(data) - len(kept))
            atomic_write_bytes(path, kept)


class ManifestAppender:
    """Appends rows to a manifest, each call flushed and fsynced before it returns; writes the
    header first when the file is new or empty.

        with ManifestAppender(dst / "manifest.csv", COLUMNS) as manifest:
            ...  # write the outputs of a batch, atomically
            manifest.write(rows)  # then their rows
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str], lineterminator: str = "\n"):
        self.path = Path(path)
        self.columns = list(columns)
        self.lineterminator = lineterminator
        repair_manifest(self.path)

    def __enter__(self) -> "ManifestAppender":
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._handle = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=self.columns, lineterminator=self.lineterminator)
        if new:
            self._writer.writeheader()
            self._sync()
        return self

    def write(self, rows: Sequence[dict[str, str]]) -> None:
        fault_point("manifest-append")  # the outputs of these rows are on disk, the rows not yet
        try:
            self._writer.writerows(rows)
            self._sync()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no space left on the device while appending to {self.path}; its complete rows "
                                    "are kept (a partial last row is dropped on the next run): free some space and "
                                    "run the command again, it resumes") from exc
            raise

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def __exit__(self, *exc) -> None:
        self._handle.close()


def unique_output_names(keys: Sequence[str], suffix: str, keep_own_suffix: bool = False) -> list[str]:
    """Output paths for input paths `keys` (relative, POSIX), with `suffix` (".png") in place of
    theirs. Inputs that would share a name (x.jpg and x.png) keep their whole name instead
    (x.jpg.png); with `keep_own_suffix`, one that already ends in `suffix` keeps the plain name."""
    plain = [Path(key).with_suffix(suffix).as_posix() for key in keys]
    counts: dict[str, int] = {}
    for name in plain:
        counts[name] = counts.get(name, 0) + 1
    names = []
    for key, name in zip(keys, plain):
        clash = counts[name] > 1 and not (keep_own_suffix and Path(key).suffix.lower() == suffix)
        names.append(key + suffix if clash else name)
    return names
