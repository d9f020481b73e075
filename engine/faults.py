"""Named places where a process can die, for crash tests: a kill there must lose nothing.

Random kills rarely land inside a checkpoint write or a manifest append, so the code marks
those moments with `fault_point(name)`. With `FACEGAN_FAULT` naming the point, the process sends
itself SIGKILL there (no cleanup, no `finally`, exactly as the OOM killer would):

    FACEGAN_FAULT=checkpoint-rename facegan gan train ...        # the first time it is reached
    FACEGAN_FAULT=manifest-append@3 facegan align SRC DST         # the third time
    FACEGAN_FAULT=trainer-step@7,cache-shard ...                  # either, whichever comes first

The points (`FAULT_POINTS`) and what must survive a kill at each:
- `checkpoint-rename`: a checkpoint is written and synced but not yet renamed into place;
- `checkpoint-rotate`: `latest.pt` has become `previous.pt`, the new one not yet `latest.pt`;
- `trainer-step`: an optimiser step is done and logged, not yet checkpointed;
- `manifest-append`: a folder job's outputs are on disk, their manifest rows not yet appended;
- `cache-shard`: a cache shard is on disk, the build's progress file does not list it yet;
- `metrics-line`: half a metrics.jsonl line is written.
Unset, `fault_point` costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

__all__ = ["FAULT_ENV", "FAULT_POINTS", "fault_point"]

FAULT_ENV = "FACEGAN_FAULT"
FAULT_POINTS = ("checkpoint-rename", "checkpoint-rotate", "trainer-step", "manifest-append", "cache-shard",
                "metrics-line")

_reached: dict[str, int] = {}


def _wanted() -> dict[str, int]:
    wanted = {}
    for item in os.environ.get(FAULT_ENV, "").split(","):
        name, _, count = item.strip().partition("@")
        if name:
            wanted[name] = int(count) if count.isdigit() else 1
    return wanted


def fault_point(name: str) -> None:
    """Die here, by SIGKILL, when $FACEGAN_FAULT asks for `name` (see the module docstring)."""
    if FAULT_ENV not in os.environ:
        return
    wanted = _wanted()
    if name not in wanted:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == wanted[name]:
        os.kill(os.getpid(), signal.SIGKILL)
