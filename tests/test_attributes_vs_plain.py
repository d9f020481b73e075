"""`benchmarks/attributes_vs_plain.py`: the plain reference is the network the benchmark names,
and its scores are the mean and balanced accuracies they say they are."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_reference_is_nine_conv_bn_relu_layers_with_three_pools_and_trains():
    reference = _load("plain_cnn_reference")
    model = reference.PlainCNN(40)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128, 256, 256, 256]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 3
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 40)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 64, 64, 3)).astype(np.uint8)
    labels = (images.mean((1, 2, 3)) > 127).astype(np.float32)[:, None].repeat(2, 1)
    mask = np.ones_like(labels, dtype=bool)
    mask[:, 1] = False  # a column without labels contributes nothing
    trained, seconds, steps = reference.train_plain(images, labels, mask, epochs=2, batch_size=8)
    assert steps == 4 and seconds > 0 and not trained.training
    assert reference.predict_plain(trained, images).shape == (16, 2)


def test_scores_are_the_mean_and_balanced_accuracy_over_attributes():
    bench = _load("attributes_vs_plain")
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    correct = np.array([[1, 1], [1, 0], [0, 1], [1, 1]])
    known = np.ones_like(truth, dtype=bool)
    accuracy, balanced = bench.scores(correct, truth, known)
    # attribute 0: 3/4 right; positives 2/2, negatives 1/2 -> 0.75. attribute 1: 3/4; positives 1/2, negatives 2/2 -> 0.75
    assert accuracy == pytest.approx(0.75) and balanced == pytest.approx(0.75)
    known[0, 0] = False  # an unknown label is not scored
    accuracy, _ = bench.scores(correct, truth, known)
    assert accuracy == pytest.approx((2 / 3 + 3 / 4) / 2)
    people = np.array(["a", "a", "b", "b"])
    result = bench.bootstrap(people, correct, np.zeros_like(correct), truth, np.ones_like(truth, dtype=bool), 50, 0)
    assert result["difference_accuracy"]["value"] == pytest.approx(0.75)
    assert result["plain_accuracy"]["value"] == 0.0
    assert result["difference_accuracy"]["low"] <= 0.75 <= result["difference_accuracy"]["high"]


def test_a_reused_reference_must_have_scored_the_same_faces():
    bench = _load("attributes_vs_plain")
    truth = np.array([[1, 0], [0, 1]])
    known = np.ones_like(truth, dtype=bool)
    record = {"people": ["a", "b"], "truth": truth.tolist(), "known": known.tolist(), "plain_correct": [[1, 1], [0, 1]]}
    assert bench.reused_plain_correct(record, ["a", "b"], truth, known, "run") == [[1, 1], [0, 1]]
    for people, other_truth, other_known in ((["b", "a"], truth, known), (["a", "b"], 1 - truth, known),
                                             (["a", "b"], truth, ~known)):
        with pytest.raises(SystemExit, match="differ"):
            bench.reused_plain_correct(record, people, other_truth, other_known, "run")


def test_a_run_cut_short_by_its_step_cap_is_reported():
    bench = _load("attributes_vs_plain")
    # the case met on 2026-12-06: a pilot slowed by another process set a cap of 620 steps, reached in 239 of 344 s
    assert "620 steps per member after 239 s of its 344 s" in bench.cap_shortfall("clock", 620, 620, 239.0, 344.0)
    assert bench.cap_shortfall("clock", 1563, 3200, 343.0, 344.0) == ""  # the clock ended it: the budget was used
    assert bench.cap_shortfall("clock", 620, 620, 340.0, 344.0) == ""  # the cap and the clock met
    assert bench.cap_shortfall("steps", 620, 620, 239.0, 344.0) == ""  # a planned schedule ends at its steps


def test_a_rerun_reuses_a_fold_only_if_it_was_made_with_the_same_recipe(tmp_path):
    import argparse
    import json

    bench = _load("attributes_vs_plain")
    args = argparse.Namespace(out=tmp_path, preset="celeba80-vgg-closeup-all", overrides=[], folds=5, epochs=15,
                              split_seed=0, seed=0, val_fraction=0.0, reference_from=None, schedule="clock")
    (tmp_path / "fold0").mkdir()
    made = {"fold": 0, "recipe": bench.fold_recipe(args), "plain_seconds": 1.0}
    (tmp_path / "fold0" / "fold.json").write_text(json.dumps(made))
    assert bench.run_fold(args, 0, None, None, None) == made  # nothing else is needed to reuse it
    args.overrides = ["loss.label_smoothing=0.2"]
    with pytest.raises(SystemExit, match="another recipe"):
        bench.run_fold(args, 0, None, None, None)
    args.overrides, args.schedule = [], "steps"  # a schedule planned in steps trains another model
    with pytest.raises(SystemExit, match="another recipe"):
        bench.run_fold(args, 0, None, None, None)
    args.schedule = "clock"
    del made["recipe"]  # a record from before recipes were recorded is not trusted either
    (tmp_path / "fold0" / "fold.json").write_text(json.dumps(made))
    args.overrides = []
    with pytest.raises(SystemExit, match="not recorded"):
        bench.run_fold(args, 0, None, None, None)


def test_each_member_s_steps_are_reported_since_members_can_differ_in_speed():
    bench = _load("attributes_vs_plain")
    assert bench.member_steps_of({"facegan_member_steps": [1146, 789], "facegan_steps": 789, "facegan_members": 2}) == [1146, 789]
    assert bench.member_steps_of({"facegan_steps": 954, "facegan_members": 2}) == [954, 954]  # a fold recorded before
    assert bench.steps_text([1146, 789]) == "1146 + 789"
