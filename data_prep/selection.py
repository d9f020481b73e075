"""Which faces to show or measure when not all of them: evenly spaced rows."""
from __future__ import annotations

import numpy as np

__all__ = ["evenly_spaced"]


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """At most `wanted` distinct row indices spread evenly over 0..count-1, first and last
    included, ascending (all of them when `wanted >= count`)."""
    if wanted >= count:
        return list(range(count))
    if wanted <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, count - 1, wanted).round()})
