"""One process at a time in a shared folder: an exclusive lock on a file beside the work.

Several processes may need the same expensive result at once: the ranks of a `torchrun`
training each open the same aligned-face cache, a study runs two cells over one dataset, two
users share a cache folder. Without a lock each would build it, in the same files. With

    with exclusive_lock(cache_dir / ".build.lock", what="the aligned cache"):
        cache = build_cache(...)      # the first builds it; the others then find it up to date

the first process builds and the others wait, then reuse. The lock is the operating system's
(`fcntl.flock`), so a killed holder releases it at once; no stale lock file can block a rerun.
Where `fcntl` is missing (Windows) the block runs unlocked, as before.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Iterator

__all__ = ["exclusive_lock"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the `with` block; when another
    process holds it, say so once and wait for it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            started = time.perf_counter()
            log.info("waiting for another process working on %s (%s)", what or path.parent, path)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            log.info("lock %s acquired after %.1f s", path, time.perf_counter() - started)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
