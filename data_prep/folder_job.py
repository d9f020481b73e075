"""The resumable folder job: many inputs, one output file each, and a CSV manifest that can be
trusted after a crash.

The rule every such job (`facegan align`, `facegan sr apply`) follows:
1. each output is written atomically (a temporary file beside it, then a rename), so a kill
   leaves a whole file or none;
2. only then is its manifest row appended, flushed and fsynced (`ManifestAppender`), so every
   row names a complete file;
3. a rerun reads the manifest back (`read_rows`), dropping a last row cut short by a kill,
   skips the inputs it lists, and processes only the rest.

Under torchrun (any number of processes, on one machine or several sharing the output folder)
a job is sharded (`JobShard`): batch j of the whole input list belongs to rank j mod N, each
rank appends to its own manifest part, and once every rank is done rank 0 merges the parts into
the manifest in input order (`merge_parts`). A killed rank's rerun resumes its own part.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from engine.checkpoint import atomic_write_bytes
from engine.errors import DiskFullError, FaceganError
from engine.faults import fault_point

log = logging.getLogger(__name__)

__all__ = ["ManifestError", "read_rows", "repair_manifest", "ManifestAppender", "unique_output_names", "JobShard",
           "job_shard", "merge_parts", "JsonLinesAppender", "read_json_lines", "merge_json_parts"]


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


class JobShard:
    """This process's share of a folder job: rank `rank` of `world` (1 of 1 without torchrun)."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world

    @property
    def sharded(self) -> bool:
        return self.world > 1

    def part(self, manifest: Path) -> Path:
        """The manifest this rank appends to: the manifest itself when not sharded."""
        if not self.sharded:
            return manifest
        return manifest.with_name(f"{manifest.stem}.part{self.rank:03d}-of-{self.world:03d}{manifest.suffix}")

    def parts(self, manifest: Path) -> list[Path]:
        return [JobShard(rank, self.world).part(manifest) for rank in range(self.world)]

    def batches(self, items: Sequence, batch_size: int) -> list[list]:
        """This rank's batches of the whole, ordered input list: whole batches, so that every
        input meets the same batch neighbours as in a one-process run."""
        batches = [list(items[start:start + batch_size]) for start in range(0, len(items), batch_size)]
        return batches[self.rank::self.world]

    def barrier(self) -> None:
        if self.sharded:
            import torch.distributed as dist

            dist.barrier()


def job_shard() -> JobShard:
    """The shard of this process: from torchrun's RANK / WORLD_SIZE (joining its gloo process
    group, for the barrier), else the whole job."""
    from engine.distributed import init_distributed

    info = init_distributed("cpu")
    return JobShard(info.rank, info.world_size)


def _in_order(rows: list[dict], order: dict[str, int], key: str) -> list[dict]:
    seen: dict[str, dict] = {}
    for row in rows:
        seen.setdefault(row[key], row)  # a row is never written twice; keep the first if it were
    return sorted(seen.values(), key=lambda row: order.get(row[key], len(order)))


def merge_parts(manifest: Path, shard: JobShard, columns: Sequence[str], order: dict[str, int], key: str,
                lineterminator: str = "\n") -> list[dict[str, str]]:
    """Rank 0, once every rank is done: the manifest's own rows and every part's, in input order
    (by `order[row[key]]`, unknown keys last), written over the manifest atomically; then the
    parts are removed. Returns the rows."""
    rows = read_rows(manifest, columns)
    for part in shard.parts(manifest):
        rows += read_rows(part, columns)
    merged = _in_order(rows, order, key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator=lineterminator)
    writer.writeheader()
    writer.writerows(merged)
    atomic_write_bytes(manifest, buffer.getvalue().encode("utf-8"))
    for part in shard.parts(manifest):
        part.unlink(missing_ok=True)
    return merged


# ---------------------------------------------------------------- results as JSON lines
def read_json_lines(path: str | os.PathLike) -> list[dict]:
    """The complete records of a JSON-lines file (none when it does not exist); a last line cut
    short by a kill is ignored, a damaged line in the middle is an error naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(_complete_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}:{number}: not a JSON record ({exc.msg}); use a new output file") from None
    return records


class JsonLinesAppender:
    """Appends records as JSON lines, each call flushed and fsynced before it returns."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        repair_manifest(self.path)

    def __enter__(self) -> "JsonLinesAppender":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")
        return self

    def write(self, records: Sequence[dict]) -> None:
        fault_point("manifest-append")
        try:
            self._handle.write("".join(json.dumps(record) + "\n" for record in records))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no space left on the device while appending to {self.path}; its complete lines "
                                    "are kept: free some space and run the command again, it resumes") from exc
            raise

    def __exit__(self, *exc) -> None:
        self._handle.close()


def merge_json_parts(path: Path, shard: JobShard, order: dict[str, int], key: str) -> list[dict]:
    """`merge_parts` for a JSON-lines file."""
    records = read_json_lines(path)
    for part in shard.parts(path):
        records += read_json_lines(part)
    merged = _in_order(records, order, key)
    atomic_write_bytes(path, "".join(json.dumps(record) + "\n" for record in merged).encode("utf-8"))
    for part in shard.parts(path):
        part.unlink(missing_ok=True)
    return merged
