"""Shared fixtures. Real-data tests read $FACEGAN_DATA (default: ../shared/data beside the
project) and skip with the reason when it is absent, as it is in a user's fresh clone."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run several torch ops at once on 2-core machines; one intra-op thread each keeps a
# parallel benchmark or a second job from being slowed many times over.
os.environ.setdefault("FACEGAN_THREADS", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_data_root() -> Path:
    return Path(os.environ.get("FACEGAN_DATA", PROJECT_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real face data not found at {root} (set FACEGAN_DATA to its folder)")
    return root


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def astronaut_rgb():
    """scikit-image's astronaut portrait: a real face photograph available offline."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) is not installed")
    return skimage_data.astronaut()
