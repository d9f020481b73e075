"""The one exception family the command line turns into a clear message instead of a traceback."""
from __future__ import annotations

__all__ = ["FaceganError", "DiskFullError"]


class FaceganError(Exception):
    """A problem the user can fix (a missing file, a bad option, unusable data).

    Commands raise it, or a subclass, with a message that says what is wrong and what to do;
    `facegan` prints the message and exits with status 2.
    """


class DiskFullError(FaceganError, OSError):
    """A write found no space left; what it would have replaced is intact, and a rerun resumes."""
