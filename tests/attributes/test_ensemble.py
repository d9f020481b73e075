"""Ensembles (`members: K`): averaging, training the members, one checkpoint, resume, refusals."""
from __future__ import annotations

import json

import pytest
import torch

from attributes.heads import HeadConfig
from attributes.model import AttributeEnsemble, ModelConfig, build_attribute_model
from attributes.config import member_dir
from attributes.inference import load_attribute_model
from attributes.trunks import TrunkConfig
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from engine.checkpoint import load_checkpoint
from engine.config import ConfigError
from engine.errors import FaceganError
from transfer.cli import main

SCHEMAS = {
    "faces": LabelSchema((Task("Smiling", TaskKind.BINARY), Task("Male", TaskKind.BINARY),
                          Task("Age", TaskKind.REGRESSION, value_range=(0.0, 100.0)))),
}


def _model(seed: int, schemas=SCHEMAS):
    torch.manual_seed(seed)
    config = ModelConfig(TrunkConfig("alexnet_bn", 64, 0.125), HeadConfig(conv_channels=16, reduce_channels=8, feature_dim=32))
    return build_attribute_model(config, schemas).eval()


def test_ensemble_averages_every_raw_output():
    members = [_model(0), _model(1), _model(2)]
    ensemble = AttributeEnsemble(members).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        got, _ = ensemble(x, [("faces", 4)])
        each = [m(x, [("faces", 4)])[0]["faces"] for m in members]
    assert set(got["faces"]) == set(each[0])
    for name, value in got["faces"].items():
        torch.testing.assert_close(value, sum(e[name] for e in each) / 3)
    assert not torch.allclose(each[0]["binary"], each[1]["binary"])  # the members differ, so the mean is not trivial
    assert ensemble.groups is members[0].groups and ensemble.input_size == 64


def test_members_with_other_heads_are_refused():
    other = {"faces": LabelSchema((Task("Smiling", TaskKind.BINARY),))}
    with pytest.raises(ValueError, match="member 1 has other heads"):
        AttributeEnsemble([_model(0), _model(1, other)])
    with pytest.raises(ConfigError, match="members must be at least 1"):
        from attributes.config import AttributeRunConfig

        AttributeRunConfig(members=0)


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, train_attributes):
    tmp = tmp_path_factory.mktemp("ensemble")
    return tmp, train_attributes(tmp, "ens", 12, "--members", "2", "--seed", "5")


def test_members_train_with_their_own_seeds_into_one_checkpoint(ensemble_run):
    tmp, out = ensemble_run
    for k in (0, 1):
        assert (member_dir(out, k) / "checkpoints" / "latest.pt").is_file()
        assert '"split": "eval"' in (member_dir(out, k) / "metrics.jsonl").read_text()  # each member validates
    state = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert state["format"] == "attribute-ensemble" and len(state["members"]) == 2
    assert state["run_config"]["members"] == 2
    member_states = [load_checkpoint(member_dir(out, k) / "checkpoints" / "latest.pt") for k in (0, 1)]
    assert [s["run_config"]["members"] for s in member_states] == [1, 1]
    first = next(k for k, v in member_states[0]["ema"]["model"].items() if v.ndim == 4)  # a trunk convolution
    assert not torch.equal(member_states[0]["ema"]["model"][first], member_states[1]["ema"]["model"][first])  # seeds 5 and 6

    loaded = load_attribute_model(out / "checkpoints" / "latest.pt")
    assert isinstance(loaded.model, AttributeEnsemble) and len(loaded.model.members) == 2
    for k, member in enumerate(loaded.model.members):
        for key, value in member.state_dict().items():
            assert torch.equal(value, member_states[k]["ema"]["model"][key]), key
    raw = load_attribute_model(out / "checkpoints" / "latest.pt", use_ema=False)
    assert torch.equal(raw.model.members[1].state_dict()[first], member_states[1]["modules"]["model"][first])
    # thresholds calibrated on the validation people for the averaged outputs
    assert "synthetic" in loaded.thresholds and loaded.thresholds["synthetic"].numel() > 0
    assert (out / "checkpoints" / "best.pt").is_file()


def test_ensemble_evaluates_and_predicts_like_one_model(ensemble_run, tmp_path):
    tmp, out = ensemble_run
    assert main(["attributes", "eval", str(out / "checkpoints" / "latest.pt"), "--out", str(tmp_path / "eval"),
                 "--work-dir", str(tmp / "ens")]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["members"] == 2 and "| members | 2 |" in (tmp_path / "eval" / "report.md").read_text()
    assert results["datasets"]["synthetic"]["faces"] > 0


def test_tools_that_need_one_network_name_a_member(ensemble_run, tmp_path):
    from attributes.explain import explain_paths

    tmp, out = ensemble_run
    with pytest.raises(FaceganError, match=r"ensemble of 2 networks, and Grad-CAM works on one.*members/0/checkpoints/latest\.pt"):
        explain_paths(out / "checkpoints" / "latest.pt", [tmp / "synthetic"], tmp_path / "cam")


def test_resume_trains_the_members_not_yet_finished(tmp_path, train_attributes):
    """A run stopped before member 1 began: --resume leaves the finished member 0 as it was,
    trains member 1 as an uninterrupted run does, and writes the ensemble checkpoint."""
    import shutil

    full = train_attributes(tmp_path, "full", 8, "--members", "2")
    part = train_attributes(tmp_path, "part", 8, "--members", "2")
    shutil.rmtree(member_dir(part, 1))
    (part / "checkpoints" / "latest.pt").unlink()
    before = load_checkpoint(member_dir(part, 0) / "checkpoints" / "latest.pt")
    train_attributes(tmp_path, "part", 8, "--members", "2", "--resume")
    after = load_checkpoint(member_dir(part, 0) / "checkpoints" / "latest.pt")
    assert after["global_step"] == before["global_step"] == 8
    assert (part / "checkpoints" / "latest.pt").is_file()
    for k in (0, 1):
        a = load_checkpoint(member_dir(full, k) / "checkpoints" / "latest.pt")["ema"]["model"]
        b = load_checkpoint(member_dir(part, k) / "checkpoints" / "latest.pt")["ema"]["model"]
        for key in a:
            assert torch.equal(a[key], b[key]), (k, key)


def test_an_ensemble_teacher_distils_into_one_network(ensemble_run, tmp_path):
    tmp, out = ensemble_run
    target = tmp_path / "distill"
    assert main(["attributes", "distill", str(out / "checkpoints" / "latest.pt"), "--out", str(target), "--steps", "4",
                 "--no-baseline", "--threads", "1", "--no-progress"]) == 0
    student = load_attribute_model(target / "student" / "checkpoints" / "latest.pt")
    assert not isinstance(student.model, AttributeEnsemble) and student.config.members == 1
    summary = json.loads((target / "distill.json").read_text())
    members = load_attribute_model(out / "checkpoints" / "latest.pt").model.members
    assert summary["models"]["teacher"]["parameters"] == sum(p.numel() for m in members for p in m.parameters())
    assert summary["models"]["student"]["parameters"] < sum(p.numel() for p in members[0].parameters())


def test_ctrl_c_in_a_member_stops_the_ensemble_and_resume_finishes_it_exactly(tmp_path, train_attributes, monkeypatch):
    import os
    import signal

    from attributes.step import AttributeStep
    from tests.attributes.conftest import TINY

    full = train_attributes(tmp_path, "full", 8, "--members", "2")
    calls = {"n": 0}
    original = AttributeStep.train_step

    def interrupted(self, batch, step):
        calls["n"] += 1
        metrics = original(self, batch, step)
        if calls["n"] == 8 + 3:  # member 1's third step
            os.kill(os.getpid(), signal.SIGINT)
        return metrics

    monkeypatch.setattr(AttributeStep, "train_step", interrupted)
    out = tmp_path / "part"
    argv = ["attributes", "train", "--dataset", "synthetic", "--out", str(out), "--steps", "8", "--batch-size", "16",
            "--threads", "1", "--set", f"datasets.synthetic.root={tmp_path / 'synthetic'}",
            "--set", f"datasets.synthetic.cache_dir={tmp_path / 'cache'}", *TINY, "--members", "2"]
    assert main(argv) == 130
    assert load_checkpoint(member_dir(out, 1) / "checkpoints" / "latest.pt")["global_step"] == 3
    assert not (out / "checkpoints" / "latest.pt").exists()  # no ensemble of unfinished members
    monkeypatch.setattr(AttributeStep, "train_step", original)
    assert main(argv + ["--resume"]) == 0
    for k in (0, 1):
        a = load_checkpoint(member_dir(full, k) / "checkpoints" / "latest.pt")["ema"]["model"]
        b = load_checkpoint(member_dir(out, k) / "checkpoints" / "latest.pt")["ema"]["model"]
        for key in a:
            assert torch.equal(a[key], b[key]), (k, key)
    assert len(load_checkpoint(out / "checkpoints" / "latest.pt")["members"]) == 2
