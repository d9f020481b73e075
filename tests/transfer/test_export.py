"""`facegan export`: every model kind to ONNX, equal to the PyTorch path the package itself uses
(rtol 1e-3, atol 1e-4 on logits and [-1, 1] images), at any batch size, with its preprocessing
in the metadata; clear errors for a missing extra, a foreign checkpoint and a failed check."""
from __future__ import annotations

import builtins
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'facegan[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'facegan[export]'")

from attributes.heads import decode_group
from attributes.inference import load_attribute_model, raw_outputs
from data_prep.synthetic import render_faces
from engine.checkpoint import atomic_save
from engine.onnx_export import ExportError, export_onnx, onnx_session, read_metadata
from gan.generators.inference import load_generator_step
from gan.generators.models.latent import sample_latent
from gan.sr.export import sample_lr_faces
from gan.sr.inference import load_sr_checkpoint, super_resolve
from transfer.cli import main

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
RTOL, ATOL = 1e-3, 1e-4


def _export(checkpoint, tmp_path, *extra) -> tuple[Path, dict]:
    out = tmp_path / "model.onnx"
    code = main(["export", str(checkpoint), "--out", str(out), "--time", "0", "--json", "--threads", "1", *extra])
    assert code == 0
    return out, read_metadata(out)


def _faces(n, size, seed=3):
    return render_faces(n, seed=seed, size=size).image_tensor()


@pytest.mark.parametrize("run", ["legacy_dcgan", "began"])
def test_generators_export_equal_to_gan_sample(run, tmp_path, began_checkpoint):
    checkpoint = LEGACY / "gan_run" / "checkpoints" / "latest.pt" if run == "legacy_dcgan" else began_checkpoint
    out, meta = _export(checkpoint, tmp_path)
    step, _ = load_generator_step(checkpoint)
    assert meta["kind"] == "gan-generator" and meta["model"] == step.config.model
    assert meta["latent_dim"] == step.config.latent_dim and meta["value_range"] == [-1.0, 1.0]
    assert meta["image_size"] == step.config.image_size and len(meta["template"]["points"]) == 5
    session = onnx_session(out, threads=1)
    for n in (1, 5):  # the batch dimension is dynamic
        z = sample_latent(n, step.config.latent_dim, step.config.latent_distribution, generator=torch.Generator().manual_seed(n))
        (images,) = session.run(None, {"latent": z.numpy()})
        np.testing.assert_allclose(images, step._generate(step.generator, z).numpy(), rtol=RTOL, atol=ATOL)


def test_sr_generator_exports_equal_to_sr_apply(tmp_path):
    checkpoint = LEGACY / "sr_run" / "checkpoints" / "latest.pt"
    out, meta = _export(checkpoint, tmp_path)
    loaded = load_sr_checkpoint(checkpoint)
    assert meta["kind"] == "sr-generator" and meta["scale"] == loaded.scale
    assert (meta["input_size"], meta["output_size"]) == (loaded.input_size, loaded.output_size)
    assert meta["degradation"] == json.loads(json.dumps(asdict(loaded.config.degradation)))
    lr = sample_lr_faces(3, loaded.output_size, loaded.scale, seed=3)
    (sr,) = onnx_session(out, threads=1).run(["sr_images"], {"images": lr.numpy()})
    assert sr.shape == (3, 3, loaded.output_size, loaded.output_size)
    np.testing.assert_allclose(sr, super_resolve(loaded.generator, lr).numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("run", ["single", "sa_ensemble"])
def test_attribute_models_export_every_head_equal_to_predict(run, tmp_path, sa_ensemble_checkpoint):
    checkpoint = LEGACY / "attributes_run" / "checkpoints" / "latest.pt" if run == "single" else sa_ensemble_checkpoint
    out, meta = _export(checkpoint, tmp_path)
    loaded = load_attribute_model(checkpoint)
    model = loaded.model
    assert meta["kind"] == "attribute-model" and meta["members"] == (2 if run == "sa_ensemble" else 1)
    assert meta["input_size"] == model.input_size and meta["value_range"] == [-1.0, 1.0]
    assert set(meta["schemas"]) == set(model.schemas) and meta["flip_tta"] == loaded.config.eval.flip_tta
    session = onnx_session(out, threads=1)
    names = [o.name for o in session.get_outputs()]
    assert names == meta["outputs"]
    faces = _faces(4, model.input_size)
    got = dict(zip(names, session.run(None, {"images": (faces.float() / 127.5 - 1).numpy()})))
    expected_sa = run == "sa_ensemble"
    for dataset, groups in model.groups.items():
        want = raw_outputs(model, faces, dataset)
        for group in groups:
            name = f"{dataset}/{group.name}"
            np.testing.assert_allclose(got[name], want[group.name].numpy(), rtol=RTOL, atol=ATOL)
            assert group.sa == expected_sa or group.kind.value == "regression"
            if group.sa:  # SA-softmax's confidence, which the grades are read from
                confidence = decode_group(group, want[group.name])["confidence"].numpy()
                np.testing.assert_allclose(got[f"{name}/confidence"], confidence, rtol=RTOL, atol=ATOL)
    heads = {h["output"]: h for h in meta["heads"]}
    assert set(heads) == {n for n in names if not n.endswith("/confidence")}
    assert meta["grades"]["letters"] == ["S", "A", "B", "C", "D"]
    if expected_sa:
        assert any(n.endswith("/confidence") for n in names)


def test_the_cli_prints_the_check_and_the_speed_ratio(tmp_path, capsys):
    out = tmp_path / "gan.onnx"
    assert main(["export", str(LEGACY / "gan_run" / "checkpoints" / "latest.pt"), "--out", str(out), "--time", "0.2",
                 "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} (gan-generator)" in text and "within rtol=0.001, atol=0.0001" in text
    assert "images/s" in text and "x)" in text


def test_a_checkpoint_of_no_model_is_refused(tmp_path, capsys):
    path = tmp_path / "other.pt"
    atomic_save({"run_config": {"something": 1}, "global_step": 0}, path)
    assert main(["export", str(path), "--out", str(tmp_path / "x.onnx"), "--time", "0"]) == 2
    err = capsys.readouterr().err
    assert "nothing to export" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_a_missing_extra_names_the_install_command(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def without_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    assert main(["export", str(LEGACY / "gan_run" / "checkpoints" / "latest.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "pip install 'facegan[export]'" in capsys.readouterr().err


class _Noisy(torch.nn.Module):
    """Exports fine, but onnxruntime's random numbers are not PyTorch's: the check must fail."""

    def forward(self, images):
        return images + torch.rand_like(images)


def test_a_file_that_disagrees_with_pytorch_is_not_written(tmp_path):
    out = tmp_path / "noisy.onnx"
    with pytest.raises(ExportError, match="not written: onnxruntime disagrees"):
        export_onnx(_Noisy(), torch.zeros(2, 3, 8, 8), out, ["out"], {"kind": "test"})
    assert not out.exists() and not list(tmp_path.iterdir())


def test_metadata_values_survive_as_json(tmp_path):
    out = tmp_path / "id.onnx"
    check = export_onnx(torch.nn.Identity(), torch.zeros(2, 3, 4, 4), out, ["same"],
                        {"kind": "test", "points": [[1.5, 2.0]], "nested": {"a": None}}, time_seconds=0.05)
    assert read_metadata(out) == {"kind": "test", "points": [[1.5, 2.0]], "nested": {"a": None}}
    assert check.passed and check.onnx_images_per_s > 0 and check.torch_images_per_s > 0
    assert json.dumps(check.to_dict())
