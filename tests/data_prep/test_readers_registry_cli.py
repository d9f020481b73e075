"""The reader registry and `facegan data info`."""

from __future__ import annotations

import argparse
import shutil

import pytest
from PIL import Image

from data_prep.datasets import DATASETS, DatasetOptionError, UnknownDatasetError, available_datasets, load_dataset
from data_prep import cli as data_prep_cli


def _parser():
    """The `facegan data` parser (its subcommands info, synth, cache)."""
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    data_prep_cli.register(commands)
    return commands.choices["data"]


def test_registry_names_and_errors(tmp_path):
    assert available_datasets() == sorted(DATASETS)
    assert {"celeba", "lfw", "utkface", "morph", "chalearn_lap", "fotw", "adience", "folder_csv"} <= set(DATASETS)
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'nope'; available: adience"):
        load_dataset("nope", tmp_path)


def test_info_command_prints_summary(tmp_path, fixtures_dir, capsys):
    root = tmp_path / "adience"
    shutil.copytree(fixtures_dir / "readers" / "adience", root)
    (root / "faces").mkdir()
    folder = root / "faces" / "30601258@N03"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "coarse_tilt_aligned_face.2.10424815813_e94629b1ec_o.jpg", format="JPEG")
    args = _parser().parse_args(["info", "adience", str(root), "--option", "test_fold=0", "--max-skipped", "2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "adience: 1 images, 1 identities, 2 tasks" in out
    assert "test         1 images" in out
    assert "Age_group" in out and "25-32 1" in out and "positive 100.0%" in out
    assert "folds: 0: 1" in out
    assert "skipped: 28" in out and "... and 26 more" in out
    bad = _parser().parse_args(["info", "adience", str(root), "--option", "colour=red"])
    with pytest.raises(DatasetOptionError, match="has no option"):
        bad.func(bad)


@pytest.mark.real_data
def test_info_on_real_utkface(shared_data, capsys):
    args = _parser().parse_args(["info", "utkface", str(shared_data / "utkface"), "--split", "test"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "Race" in out and "White" in out and "skipped: 2" in out and "malformed" in out
