"""Knowledge distillation (attributes/distill.py): the soft-target losses by hand, and the command
that trains a student with a teacher beside the same student alone."""
from __future__ import annotations

import json
import math

import pytest
import torch

from attributes.distill import distillation_loss
from attributes.heads import HeadConfig, plan_groups
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from transfer.cli import main

SCHEMA = LabelSchema((Task("Smiling", TaskKind.BINARY), Task("Hair", TaskKind.CATEGORICAL, ("a", "b")),
                      Task("Age", TaskKind.REGRESSION, value_range=(0.0, 100.0))))


def _groups(**head):
    return {g.name: g for g in plan_groups("d", SCHEMA, HeadConfig(**head))}


def _bernoulli_kl(p, q):
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_binary_soft_targets_by_hand():
    group = _groups()["binary"]
    student, teacher = torch.zeros(1, 1), torch.full((1, 1), 2.0)
    # T = 1: KL(Bernoulli(sigmoid 2) || Bernoulli(1/2))
    p = 1 / (1 + math.exp(-2))
    assert distillation_loss(group, student, teacher, 1.0).item() == pytest.approx(_bernoulli_kl(p, 0.5), rel=1e-5)
    # T = 2 softens the teacher to sigmoid(1) and scales by T^2
    p = 1 / (1 + math.exp(-1))
    assert distillation_loss(group, student, teacher, 2.0).item() == pytest.approx(4 * _bernoulli_kl(p, 0.5), rel=1e-5)
    assert distillation_loss(group, teacher, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_categorical_sa_and_regression_soft_targets_by_hand():
    groups = _groups()
    # teacher (ln 3, 0) -> (0.75, 0.25); student uniform: KL = 0.75 ln 1.5 + 0.25 ln 0.5
    kl = distillation_loss(groups["Hair"], torch.zeros(1, 2), torch.tensor([[math.log(3), 0.0]]), 1.0)
    assert kl.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-5)
    # age: L2 in decades between the values: (30 - 40)^2 / 100
    assert distillation_loss(groups["Age"], torch.tensor([[30.0]]), torch.tensor([[40.0]]), 4.0).item() == pytest.approx(1.0)
    # DEX bins: the values are the expectations over bins, and the loss has gradients
    dex = _groups(age_mode="dex")["Age"]
    student = torch.zeros(1, dex.bins, requires_grad=True)  # uniform: expectation 50
    teacher = torch.full((1, dex.bins), -1e4)
    teacher[0, 20] = 0.0  # all mass on age 20
    loss = distillation_loss(dex, student, teacher, 4.0)
    assert loss.item() == pytest.approx(9.0, rel=1e-4)
    loss.backward()
    assert student.grad.abs().sum() > 0
    # SA-softmax: KL over all three outputs of each binary attribute, "unrecognizable" included
    sa = _groups(sa_softmax=True)["binary"]
    t = torch.tensor([[0.0, 0.0, math.log(2)]])  # (1/4, 1/4, 1/2)
    s = torch.zeros(1, 3)  # (1/3, 1/3, 1/3)
    expected = 2 * 0.25 * math.log(0.75) + 0.5 * math.log(1.5)
    assert distillation_loss(sa, s, t, 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_distill_command_trains_a_student_beside_the_same_student_alone(tmp_path, train_attributes):
    teacher = train_attributes(tmp_path, "teacher", 20)
    out = tmp_path / "distill"
    assert main(["attributes", "distill", str(teacher / "checkpoints" / "latest.pt"), "--out", str(out), "--steps", "10",
                 "--threads", "1", "--no-progress", "--set", "trainer.log_every=2"]) == 0
    summary = json.loads((out / "distill.json").read_text())
    assert set(summary["models"]) == {"teacher", "student", "alone"}
    assert summary["models"]["student"]["parameters"] < summary["models"]["teacher"]["parameters"]
    assert summary["models"]["student"]["parameters"] == summary["models"]["alone"]["parameters"]
    assert summary["student_trunk"]["width"] == 0.0625  # half the teacher's
    assert "the student trained alone" in (out / "distill.md").read_text()
    student_rows = (out / "student" / "metrics.jsonl").read_text()
    assert '"loss/distill"' in student_rows and '"loss/distill"' not in (out / "alone" / "metrics.jsonl").read_text()
    # a teacher whose heads do not match is refused with a clear message
    other = train_attributes(tmp_path, "other", 2, "--set", "datasets.synthetic.tasks=[Male]")
    assert main(["attributes", "train", "--out", str(tmp_path / "bad"), "--steps", "2", "--teacher",
                 str(other / "checkpoints" / "latest.pt"), "--set", "trainer.progress=false",
                 "--set", f"datasets.synthetic.root={tmp_path / 'synthetic'}",
                 "--set", f"datasets.synthetic.cache_dir={tmp_path / 'cache'}", "--dataset", "synthetic"]) == 2
