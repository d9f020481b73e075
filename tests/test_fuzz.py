"""Generated damage for every label-file parser and the image loader (harness: tests/fuzzing.py).

Derandomised, so that CI sees the same examples on every run; `python benchmarks/crash_resume.py
--fuzz-examples N` runs the long version.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from data_prep.align.templates import TemplateError, load_template
from data_prep.datasets.celeba import read_celeba_landmarks
from data_prep.datasets.folder_csv import read_schema_file
from data_prep.datasets.record import LabelFileError
from data_prep.datasets.utkface import parse_utkface_name
from engine.errors import FaceganError


def _load_harness():
    spec = importlib.util.spec_from_file_location("facegan_fuzzing", Path(__file__).with_name("fuzzing.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fuzzing = _load_harness()
TARGETS = {t.name: t for t in fuzzing.label_targets()}
EXAMPLES = 120


def test_every_parser_has_a_target():
    wanted = {
        "celeba list_attr_celeba", "celeba list_attr_celeba (csv)", "celeba list_eval_partition",
        "celeba identity_CelebA", "celeba list_landmarks_align_celeba", "celeba list_bbox_celeba",
        "lfw male_names", "lfw female_names", "lfw columbia attributes", "lfwa attributes", "morph csv",
        "morph protocol list", "adience fold", "chalearn lap 2015", "chalearn lap 2016", "chalearn fotw",
        "folder csv", "folder csv with schema", "folder csv schema sidecar", "template csv", "template json",
        "template yaml",
    }
    assert wanted <= set(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_damaged_label_files_parse_or_name_the_file(name):
    tally = fuzzing.fuzz_target(TARGETS[name], EXAMPLES)
    assert tally.examples >= EXAMPLES
    # The damages must reach both outcomes, or the target is not testing the parser.
    assert tally.parsed > 0 and tally.refused > 0


def test_damaged_images_load_or_raise_image_load_error():
    tally = fuzzing.fuzz_images(300)
    assert tally.examples >= 300 and tally.parsed > 0
    assert {"not_an_image", "too_large"} <= set(tally.reasons)


def test_every_intact_image_seed_loads_as_its_layout_says(tmp_path):
    from data_prep.images import ImageLoadError, load_rgb

    shapes = {}
    for name, data in fuzzing.image_seeds().items():
        path = tmp_path / name
        path.write_bytes(data)
        if name == "bomb.png":
            with pytest.raises(ImageLoadError, match="bomb.png: too_large"):
                load_rgb(path)
            continue
        array = load_rgb(path, min_side=1)
        assert array.dtype.name == "uint8" and array.shape[2] == 3, name
        shapes[name] = array.shape[:2]
    assert shapes["rgb.png"] == (24, 32)
    assert shapes["exif_rotated.jpg"] == (32, 24)  # EXIF orientation 6 turns the 32x24 picture upright
    assert shapes["one_by_one.png"] == (1, 1) and shapes["gray16.png"] == (20, 20)


def test_utkface_names_parse_or_raise_value_error():
    tally = fuzzing.fuzz_utkface_names(200)
    assert tally.parsed > 0 and tally.refused > 0


def test_the_harness_fails_on_a_foreign_exception_and_on_an_anonymous_error(tmp_path):
    seed = tmp_path / "seed.txt"
    seed.write_text("a 1\nb 2\n")

    def crashes(path):
        raise KeyError("x")

    def anonymous(path):
        raise FaceganError("something is wrong")

    with pytest.raises(Exception) as crash:
        fuzzing.fuzz_target(fuzzing.Target("crashes", [seed], crashes, "seed.txt"), 5)
    assert "KeyError" in repr(crash.value) or isinstance(crash.value, KeyError)
    with pytest.raises(fuzzing.ContractBroken):
        fuzzing.fuzz_target(fuzzing.Target("anonymous", [seed], anonymous, "seed.txt"), 5)


# The bugs the fuzzing found, kept as plain regression tests.


def test_a_schema_file_in_latin1_is_a_label_file_error(tmp_path):
    path = tmp_path / "labels.schema.yaml"
    path.write_bytes(b"tasks:\n  - {name: caf\xe9, kind: binary}\n")
    with pytest.raises(LabelFileError, match=r"labels.schema.yaml:2: not UTF-8"):
        read_schema_file(path)


def test_a_superscript_count_line_is_a_label_file_error(tmp_path):
    path = tmp_path / "list_landmarks_align_celeba.txt"
    path.write_text("\u00b2\nlefteye_x lefteye_y\n000001.jpg 1 2\n", encoding="utf-8")
    with pytest.raises(LabelFileError, match="list_landmarks_align_celeba.txt"), pytest.warns(UserWarning, match="no count line"):
        read_celeba_landmarks(path)


@pytest.mark.parametrize("text", ['{"size": 1%s, "points": [[1,1],[2,1],[1,2],[1,3],[2,3]]}',
                                  '{"size": 100, "points": [[1%s,1],[2,1],[1,2],[1,3],[2,3]]}'])
def test_a_400_digit_template_number_is_a_template_error(tmp_path, text):
    path = tmp_path / "t.json"
    path.write_text(text % ("0" * 400))
    with pytest.raises(TemplateError, match="t.json"):
        load_template(path)


def test_a_superscript_digit_is_not_a_utkface_age():
    with pytest.raises(ValueError, match="non-numeric"):
        parse_utkface_name("\u00b2_0_1_20170116174525125.jpg.chip.jpg")


def test_a_400_digit_adience_age_is_a_label_file_error(tmp_path):
    from data_prep.datasets.adience import ADIENCE_COLUMNS, read_adience_fold

    path = tmp_path / "fold_0_data.txt"
    row = ["u1", "a.jpg", "1", "(2, " + "9" * 400 + ")", "m", "0", "0", "10", "10", "0", "0", "50"]
    path.write_text("\t".join(ADIENCE_COLUMNS) + "\n" + "\t".join(row) + "\n" + "\t".join(row).replace("a.jpg", "b.jpg") + "\n")
    with pytest.raises(LabelFileError, match=r"fold_0_data.txt:2: .*past 130"):
        read_adience_fold(path)
