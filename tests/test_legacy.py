"""What facegan 0.1.0 wrote keeps working: its checkpoints open in every command, its runs
resume, and the fingerprints that name cached work are unchanged.

The runs and numbers in tests/fixtures/legacy/ were made by 0.1.0 itself, before the package was
reorganised (tests/fixtures/legacy/make_fixtures.py says how); this file only reads them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from transfer.cli import main

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
SR_STUB = "/tmp/facegan-legacy-sr-stub.pt"


def _copy_run(name: str, tmp_path: Path) -> Path:
    run = tmp_path / name
    shutil.copytree(LEGACY / name, run)
    return run


def test_a_pre_move_gan_checkpoint_samples_the_same_faces(tmp_path):
    from gan.generators.inference import load_generator_step

    step, _ = load_generator_step(LEGACY / "gan_run" / "checkpoints" / "latest.pt")
    faces = step.sample(4, generator=torch.Generator().manual_seed(0))
    expected = EXPECTED["gan"]
    assert float(faces.double().sum()) == pytest.approx(expected["sample_seed0_n4_sum"], abs=1e-4)
    assert torch.allclose(faces[0, :, 0, :4], torch.tensor(expected["sample_seed0_n4_first"]), atol=1e-6)
    out = tmp_path / "faces"
    assert main(["gan", "sample", str(LEGACY / "gan_run" / "checkpoints" / "latest.pt"), "--out", str(out), "-n", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "grid.png"]


def test_a_pre_move_sr_checkpoint_super_resolves_the_same_pixels(tmp_path):
    import numpy as np
    from PIL import Image

    from gan.sr.inference import load_sr_checkpoint, super_resolve

    checkpoint = LEGACY / "sr_run" / "checkpoints" / "latest.pt"
    loaded = load_sr_checkpoint(checkpoint)
    lr = torch.linspace(-1, 1, 2 * 3 * 8 * 8).view(2, 3, 8, 8)
    sr = super_resolve(loaded.generator, lr)
    expected = EXPECTED["sr"]
    assert float(sr.double().sum()) == pytest.approx(expected["super_resolve_ramp_sum"], abs=1e-3)
    assert torch.allclose(sr[0, :, 0, :4], torch.tensor(expected["super_resolve_ramp_first"]), atol=1e-5)
    src = tmp_path / "faces"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(src / "a.png")
    dst = tmp_path / "sr"
    assert main(["sr", "apply", str(checkpoint), str(src), str(dst), "--no-progress", "--threads", "1"]) == 0
    assert Image.open(dst / "a.png").size == (32, 32)


def test_a_pre_move_attribute_checkpoint_predicts_and_evaluates_alike(tmp_path, capsys):
    from attributes.inference import raw_outputs
    from attributes.inference import load_attribute_model
    from data_prep.assets import ASTRONAUT_JPG

    run = _copy_run("attributes_run", tmp_path)
    checkpoint = run / "checkpoints" / "latest.pt"
    loaded = load_attribute_model(checkpoint)
    images = torch.linspace(0, 255, 2 * 3 * 64 * 64).view(2, 3, 64, 64).round().to(torch.uint8)
    outputs = raw_outputs(loaded.model, images, "synthetic", flip_tta=True)
    for name, value in EXPECTED["attributes"]["outputs_ramp_sum"].items():
        assert float(outputs[name].double().sum()) == pytest.approx(value, abs=1e-4), name
    assert main(["attributes", "eval", str(checkpoint), "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "report.md").is_file()
    capsys.readouterr()
    assert main(["attributes", "predict", str(checkpoint), str(ASTRONAUT_JPG)]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert prediction["counts"]["aligned"] + prediction["counts"]["center_crop"] == 1
    assert "Male" in prediction["images"][0]["tasks"]


@pytest.mark.parametrize("family, section", [("gan", "train"), ("sr", "train"), ("attributes", "trainer")])
def test_a_pre_move_run_resumes_from_its_own_config_file(tmp_path, family, section):
    run = _copy_run(f"{family}_run", tmp_path)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert section in saved  # the shape 0.1.0 wrote
    command = {"gan": ["gan", "train"], "sr": ["sr", "train"], "attributes": ["attributes", "train"]}[family]
    assert main([*command, "--config", str(run / "config.yaml"), "--out", str(run), "--resume", "--steps", "4",
                 "--threads", "1"]) == 0
    from engine.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "latest.pt")["global_step"] == 4


def test_cached_work_keeps_its_fingerprints(tmp_path, monkeypatch):
    """Aligned caches, the study's SR stages and its cells are found by these names: a change
    to them would rebuild or retrain what users already have."""
    import gan.sr.train
    from data_prep.align.aligner import AlignConfig, FaceAligner
    from data_prep.cache import source_fingerprint
    from data_prep.datasets.base import FaceDataset
    from data_prep.datasets.record import SampleRecord
    from data_prep.datasets.schema import LabelSchema, Task, TaskKind
    from engine.config import load_config
    from engine.presets import resolve_preset
    from transfer.arms import recipe_for
    from transfer.config import StudyConfig
    from transfer.study import _cell_fingerprint, prepare_sr_stage

    expected = EXPECTED["fingerprints"]
    schema = LabelSchema([Task("Male", TaskKind.BINARY)])
    records = [SampleRecord(path=f"people/p{i // 2}/{i}.jpg", identity=f"p{i // 2}", split=("train", "test")[i % 2],
                            labels={"Male": float(i % 3 == 0)},
                            meta={"landmarks": [[30 + i, 40], [70, 40], [50, 60], [35, 80], [65, 80]]})
               for i in range(6)]
    dataset = FaceDataset("fixture", records, schema, root=Path("/data/fixture"))
    assert {
        "closeup_64": source_fingerprint(dataset, 64, FaceAligner(AlignConfig(template="closeup", output_size=64))),
        "thesis_112": source_fingerprint(dataset, 112, FaceAligner(AlignConfig(template="thesis", output_size=112))),
        "unaligned_32": source_fingerprint(dataset, 32, None),
    } == expected["aligned_cache"]

    config = load_config(StudyConfig, resolve_preset("synthetic-quick", "transfer"))
    for name, entry in config.domains.items():
        entry.root = f"/studies/data/{name}"
        entry.cache_dir = f"/studies/cache/{name}-64"
    trained = []
    monkeypatch.setattr(gan.sr.train, "train", trained.append)
    checkpoint, _ = prepare_sr_stage("wild", config, tmp_path / "study", progress=False)
    assert len(trained) == 1 and checkpoint.parent.parent.name == expected["study_sr_stage_folder"]

    stub = Path(SR_STUB)
    stub.write_bytes(b"0" * 1000)
    os.utime(stub, (1_700_000_000, 1_700_000_000))
    cells = {arm: _cell_fingerprint(recipe_for(arm, "studio", "wild", config), 0, config, {"studio": stub, "wild": stub})
             for arm in expected["study_cells"]}  # the arms of that time; later arms are new cells
    assert cells == expected["study_cells"]


@pytest.mark.parametrize("old, name, new", [
    ("gan.sr_step", "SRStep", "gan.sr.step"),
    ("gan.sr_step", "load_sr_checkpoint", "gan.sr.inference"),
    ("gan.cli", "GANRunConfig", "gan.generators.config"),
    ("gan.degrade", "Degradation", "data_prep.degrade"),
    ("gan.models.srgan", "SRGenerator", "gan.sr.models"),
    ("attributes.evaluation", "evaluate_checkpoint", "attributes.evaluate"),
])
def test_an_old_import_path_warns_and_gives_the_moved_name(old, name, new):
    import importlib
    import sys

    for loaded in [name for name in sys.modules if name == old or old.startswith(name + ".")]:
        if loaded not in ("gan", "attributes"):  # forget the stand-ins (gan.models for gan.models.srgan), not the packages
            sys.modules.pop(loaded)
    with pytest.warns(FutureWarning) as warned:
        module = importlib.import_module(old)
    assert any(f"{old} has moved" in str(w.message) for w in warned)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_a_moved_name_warns_from_its_old_module():
    import attributes.evaluate
    import attributes.metrics
    import attributes.train

    with pytest.warns(FutureWarning, match="attributes.inference"):
        from attributes.train import load_attribute_model
    with pytest.warns(FutureWarning, match="attributes.metrics"):
        assert attributes.evaluate.binary_attribute_metrics is attributes.metrics.binary_attribute_metrics
    from attributes.inference import load_attribute_model as moved

    assert load_attribute_model is moved
