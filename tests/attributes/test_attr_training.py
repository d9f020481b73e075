"""Attribute training end to end on the built-in synthetic faces: CLI, resume, predict."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from transfer.cli import main

@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_attributes):
    return train_attributes(tmp_path_factory.mktemp("attr"), "run", 20)


def test_training_writes_checkpoints_metrics_and_thresholds(trained):
    state = torch.load(trained / "checkpoints" / "latest.pt", weights_only=True)
    assert state["global_step"] == 20
    assert set(state["run_config"]["schemas"]) == {"synthetic"}
    thresholds = state["step_state"]["thresholds"]["synthetic"]
    assert thresholds.shape == (5,) and ((thresholds > 0) & (thresholds < 1)).all()
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20]
    assert 0.0 <= evals[-1]["score"] <= 1.0 and "synthetic/Age_mae" in evals[-1]
    assert (trained / "curves.png").is_file() and (trained / "config.yaml").is_file()


def test_predict_aligns_photos_and_reports_bad_inputs(trained, tmp_path):
    from data_prep.assets import ASTRONAUT_JPG

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(ASTRONAUT_JPG).save(photos / "astronaut.jpg")
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(photos / "blank.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "pred.json"
    assert main(["attributes", "predict", str(trained / "checkpoints" / "latest.pt"), str(photos), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    by_name = {r["path"].split("/")[-1]: r for r in result["images"]}
    assert by_name["astronaut.jpg"]["status"] == "aligned"
    tasks = by_name["astronaut.jpg"]["tasks"]
    assert set(tasks) == {"Smiling", "Eyeglasses", "Male", "Bangs", "Wearing_Hat", "Hair_Color", "Age"}
    assert tasks["Male"]["grade"] in "SABCD" and 0.5 <= tasks["Male"]["confidence"] <= 1.0
    assert tasks["Hair_Color"]["prediction"] in tasks["Hair_Color"]["probabilities"]
    assert by_name["blank.png"]["status"] == "no_face"
    assert by_name["broken.jpg"]["status"] == "unreadable" and by_name["broken.jpg"]["reason"]
    assert result["counts"] == {"aligned": 1, "center_crop": 0, "no_face": 1, "unreadable": 1}


def test_resumed_attribute_run_equals_uninterrupted(tmp_path, train_attributes):
    common = ["--set", "trainer.deterministic=true", "--set", "optim.warmup_steps=3", "--set", "optim.schedule_steps=20"]
    full = train_attributes(tmp_path, "full", 20, *common)
    part = train_attributes(tmp_path, "part", 10, *common)
    # The same run continued: max_steps is not part of the maths (the LR schedule length is fixed above).
    train_attributes(tmp_path, "part", 20, *common, "--resume")
    a = torch.load(full / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "latest.pt", weights_only=True)
    for key, value in a["modules"]["model"].items():
        assert torch.equal(value, b["modules"]["model"][key]), key
    for key, value in a["ema"]["model"].items():
        assert torch.equal(value, b["ema"]["model"][key]), key


def test_sa_softmax_run_keeps_tags_and_eval_compares_confidences(trained, tmp_path, train_attributes):
    sa_run = train_attributes(tmp_path, "sa", 30, "--sa-softmax", "--set", "sa.plain_epochs=1", "--set", "sa.window_epochs=1",
                              "--set", "datasets.synthetic.age_groups=[30,50]")
    state = torch.load(sa_run / "checkpoints" / "latest.pt", weights_only=True)
    tags = state["step_state"]["sa"]["synthetic/binary"]
    assert tags["windows_completed"] >= 2  # 128 training faces, 16 per step: windows end at steps 16 and 24
    rows = [json.loads(line) for line in (sa_run / "metrics.jsonl").read_text().splitlines()]
    assert any("sa/synthetic/binary/unrecognizable_fraction" in r for r in rows if r["split"] == "train")
    out = tmp_path / "eval"
    assert main(["attributes", "eval", str(sa_run / "checkpoints" / "latest.pt"), "--out", str(out),
                 "--compare", str(trained / "checkpoints" / "latest.pt"), "--bootstrap", "50"]) == 0
    results = json.loads((out / "results.json").read_text())
    section = results["datasets"]["synthetic"]
    methods = section["selective"]["binary"]["methods"]
    assert set(methods) == {"sa_softmax", "max_softmax", "plain_softmax_model"}
    assert sum(g["count"] for g in methods["sa_softmax"]["grades"]) == methods["sa_softmax"]["count"]
    assert "mae" in section["age"]["Age"] and section["categorical"]["Hair_Color"]["confusion_matrix"]
    # the age groups the SA run added: an ordinal head of its own, reported the thesis's way
    assert section["categorical"]["AgeGroup"]["confusion_matrix"]
    recognized = section["selective"]["AgeGroup"]["recognized"]
    assert recognized["recognized"] + recognized["unrecognizable"] == recognized["count"] > 0
    # against the plain model, on the same predictions, with intervals over the test people
    against = section["selective"]["binary"]["against_plain"]
    assert set(against) == {"top1", "aurc_sa_softmax", "aurc_max_softmax"}
    sa_aurc, plain_aurc = methods["sa_softmax"]["aurc"], methods["plain_softmax_model"]["aurc"]
    assert against["aurc_sa_softmax"]["value"] == pytest.approx(sa_aurc - plain_aurc)
    assert against["top1"]["value"] == pytest.approx(methods["sa_softmax"]["accuracy"] - methods["plain_softmax_model"]["accuracy"])
    assert against["top1"]["groups"] == len({r.identity for r in open_test_split(sa_run)}) and against["top1"]["n_boot"] == 50
    report = (out / "report.md").read_text()
    assert "AURC" in report and (out / section["selective"]["binary"]["curve_png"]).is_file()
    assert "Against the plain-softmax model" in report and "not called unrecognizable" in report


def test_gamblers_run_trains_on_the_gamblers_loss_after_the_plain_epochs(tmp_path, train_attributes, monkeypatch):
    """sa.method=gamblers: after sa.plain_epochs the SA heads learn from the gamblers' loss with
    the configured reward (and never before); no tags are kept or logged; the run loads back."""
    from attributes import sa_softmax
    from attributes.inference import load_attribute_model

    calls = []
    real = sa_softmax.gamblers_loss

    def recording(logits, targets, num_classes, reward):
        calls.append(reward)
        return real(logits, targets, num_classes, reward)

    monkeypatch.setattr(sa_softmax, "gamblers_loss", recording)
    run = train_attributes(tmp_path, "gamblers", 12, "--sa-softmax", "--set", "sa.method=gamblers",
                           "--set", "sa.plain_epochs=1", "--set", "sa.gamblers_reward=0.4")
    # 128 training faces in steps of 16: plain softmax for steps 0-7, the gamblers' loss for 8-11
    assert set(calls) == {0.4}
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert not state["step_state"].get("sa")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("sa/") for r in rows for k in r)
    loaded = load_attribute_model(run / "checkpoints" / "latest.pt")
    assert loaded.config.sa.method == "gamblers"
    sa_groups = sum(group.sa for group in loaded.model.groups["synthetic"])
    assert sa_groups >= 2 and len(calls) == 4 * sa_groups


def open_test_split(run):
    from attributes.data import open_split
    from attributes.inference import load_attribute_model

    loaded = load_attribute_model(run / "checkpoints" / "latest.pt")
    return open_split(loaded.config.datasets["synthetic"], loaded.model.input_size, "test", run).records


def test_shared_binary_task_keeps_its_own_thresholds_and_accuracy(tmp_path, train_attributes, capsys):
    # With Male shared, the synthetic set has two binary groups: its own attributes and Male.
    # Each keeps its thresholds and its validation accuracy; eval and predict use the right ones.
    run = train_attributes(tmp_path, "shared", 10, "--set", "model.head.share_tasks=[Male]")
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    thresholds = state["step_state"]["thresholds"]
    assert thresholds["synthetic"].shape == (4,) and thresholds["synthetic/Male"].shape == (1,)
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in evals if r["split"] == "eval"][-1]
    assert "synthetic/accuracy" in last and "synthetic/Male_accuracy" in last
    out = tmp_path / "eval"
    assert main(["attributes", "eval", str(run / "checkpoints" / "latest.pt"), "--out", str(out)]) == 0
    binary = json.loads((out / "results.json").read_text())["datasets"]["synthetic"]["binary"]
    assert "calibrated" in binary and "calibrated" in binary["Male"]
    male = binary["Male"]["threshold_0.5"]["mean_accuracy"]
    assert f"Male accuracy {male:.4f}" in capsys.readouterr().out  # the summary line names the shared task too


def test_training_on_every_face_holds_nothing_out_and_eval_says_so(trained, tmp_path, train_attributes, capsys):
    from attributes.config import DatasetEntry
    from attributes.data import prepare_datasets

    shared = trained.parent  # the module's synthetic faces and cache
    run = train_attributes(shared, "all", 4, "--set", "datasets.synthetic.train_split=all")
    entry = DatasetEntry(root=str(shared / "synthetic"), cache_dir=str(shared / "cache"), synthetic_identities=40)
    split = prepare_datasets({"synthetic": entry}, 64, tmp_path, progress=False)["synthetic"]
    entry.train_split = "all"
    everything = prepare_datasets({"synthetic": entry}, 64, tmp_path, progress=False)["synthetic"]
    assert len(everything.train) == len(split.train) + len(split.val) + len(split.test)
    assert len(everything.val) == 0 and len(everything.test) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r["split"] == "eval"]  # no validation on training faces
    assert "validation: none" in capsys.readouterr().out
    assert main(["attributes", "eval", str(run / "checkpoints" / "latest.pt"), "--out", str(tmp_path / "eval")]) == 2
    assert "trained on every face" in capsys.readouterr().err


def test_a_time_bounded_run_ends_its_cosine_with_the_budget_when_asked(tmp_path, train_attributes):
    """With optim.schedule_follows_clock the learning rate reaches its floor as the time budget
    runs out, far short of trainer.max_steps; without it the run stops high up its schedule."""
    def final_lr(name, *extra):
        out = train_attributes(tmp_path, name, 100000, "--minutes", "0.05", "--set", "optim.warmup_steps=2",
                               "--set", "trainer.log_every=1", *extra)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        lrs = [r["lr"] for r in rows if r["split"] == "train"]
        assert 5 < len(lrs) < 100000
        return lrs

    clock = final_lr("clock", "--set", "optim.schedule_follows_clock=true")
    steps = final_lr("steps")
    lr = 0.002  # optim.lr's default; the floor is min_lr_ratio (0.02) of it
    assert clock[-1] < 0.1 * lr and clock[2:] == sorted(clock[2:], reverse=True)
    assert steps[-1] > 0.99 * lr


def test_trunk_weights_start_the_members_named_for_them(trained, tmp_path, train_attributes, capsys):
    """`attributes trunk-weights` saves a run's (EMA) trunk; member_trunk_checkpoints starts each
    ensemble member from its own entry, "" meaning random weights."""
    weights = tmp_path / "trunk.pt"
    assert main(["attributes", "trunk-weights", str(trained / "checkpoints" / "latest.pt"), "--out", str(weights)]) == 0
    record = torch.load(weights, weights_only=True)
    ema = torch.load(trained / "checkpoints" / "latest.pt", weights_only=True)["ema"]["model"]
    assert record["state_dict"].keys() == {k.removeprefix("trunk.") for k in ema if k.startswith("trunk.")}
    assert all(torch.equal(v, ema[f"trunk.{k}"]) for k, v in record["state_dict"].items())
    assert record["trunk"]["name"] == "alexnet_bn" and "step 20" in record["about"]

    # one step at a negligible rate: each member's convolutions stay where they started
    ensemble = train_attributes(tmp_path, "ensemble", 1, "--members", "2", "--set", "optim.lr=1e-9",
                                "--set", f"member_trunk_checkpoints=[{weights},'']")
    convs = [k for k, v in record["state_dict"].items() if k.endswith("weight") and v.dim() == 4]
    starts = []
    for k in range(2):
        member = torch.load(ensemble / "members" / str(k) / "checkpoints" / "latest.pt", weights_only=True)
        assert member["run_config"]["model"]["trunk"]["checkpoint"] == (str(weights) if k == 0 else "")
        starts.append([torch.allclose(member["modules"]["model"][f"trunk.{c}"], record["state_dict"][c], atol=1e-6)
                       for c in convs])
    assert all(starts[0]) and not any(starts[1])
    assert main(["attributes", "trunk-weights", str(ensemble / "checkpoints" / "latest.pt"), "--out", str(tmp_path / "x.pt")]) != 0
    assert "give one member's checkpoint" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
