"""Joint-supervision losses (attributes/losses.py): values worked out by hand, gradients, and their
use by the attribute trainer."""
from __future__ import annotations

import json
import math

import pytest
import torch

from attributes.losses import (
    FeatureCenters,
    center_loss,
    contrastive_center_loss,
    exclusive_regularization,
    f_measure_loss,
    relaxed_f_measure,
    update_centers,
)

FEATURES = torch.tensor([[1.0, 2.0], [3.0, 1.0]])
LABELS = torch.tensor([0, 1])
CENTERS = torch.tensor([[0.0, 0.0], [1.0, 1.0]])


def test_center_loss_by_hand():
    # sample 0: 1/2 (1 + 4) = 2.5; sample 1: 1/2 ((3-1)^2 + 0) = 2.0
    assert center_loss(FEATURES, LABELS, CENTERS).item() == pytest.approx(2.25)
    assert center_loss(FEATURES, LABELS, CENTERS, reduction="sum").item() == pytest.approx(4.5)


def test_contrastive_center_loss_by_hand():
    # sample 0: own ||(1,2)||^2 = 5, other ||(1,2)-(1,1)||^2 = 1: 1/2 * 5 / (1 + 1) = 1.25
    # sample 1: own ||(3,1)-(1,1)||^2 = 4, other ||(3,1)||^2 = 10: 1/2 * 4 / (10 + 1) = 2/11
    assert contrastive_center_loss(FEATURES, LABELS, CENTERS, reduction="sum").item() == pytest.approx(1.25 + 2 / 11)
    assert contrastive_center_loss(FEATURES, LABELS, CENTERS).item() == pytest.approx((1.25 + 2 / 11) / 2)
    # delta sits in the denominator: 1/2 * 5 / (1 + 3) + 1/2 * 4 / (10 + 3)
    assert contrastive_center_loss(FEATURES, LABELS, CENTERS, delta=3.0, reduction="sum").item() == pytest.approx(
        0.625 + 2 / 13)


def test_exclusive_regularization_by_hand():
    # rows (1,0), (0,1), (2,1): cos01 = 0, cos02 = 2/sqrt5, cos12 = 1/sqrt5
    # nearest neighbours: 2/sqrt5, 1/sqrt5, 2/sqrt5 -> mean sqrt5/3
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    assert exclusive_regularization(weight).item() == pytest.approx(math.sqrt(5) / 3)
    # the scale of a row does not matter, only its direction
    assert exclusive_regularization(weight * torch.tensor([[3.0], [0.5], [7.0]])).item() == pytest.approx(math.sqrt(5) / 3)
    with pytest.raises(ValueError):
        exclusive_regularization(torch.ones(1, 4))


def test_relaxed_f_measure_by_hand():
    # p = (0.8, 0.4, 0.1), y = (1, 0, 1): TP 0.8 + 0.1 = 0.9, FP 0.4, FN 0.2 + 0.9 = 1.1
    # H = 0.3 (0.9 + 1.1) + 0.9 + 0.4 = 1.9; F = 1.3 * 0.9 / 1.9
    probs = torch.tensor([[0.8], [0.4], [0.1]])
    targets = torch.tensor([[1.0], [0.0], [1.0]])
    f = 1.3 * 0.9 / 1.9
    assert relaxed_f_measure(probs, targets).item() == pytest.approx(f, rel=1e-6)
    logits = torch.logit(probs)
    assert f_measure_loss(logits, targets).item() == pytest.approx(1 - f, rel=1e-5)
    assert f_measure_loss(logits, targets, variant="logfloss").item() == pytest.approx(-math.log(f), rel=1e-5)
    # beta^2 = 1 is the plain F1 of the soft counts: 2 TP / (2 TP + FP + FN)
    assert relaxed_f_measure(probs, targets, beta2=1.0).item() == pytest.approx(1.8 / (1.8 + 0.4 + 1.1), rel=1e-6)
    with pytest.raises(ValueError):
        f_measure_loss(logits, targets, variant="f1")


def test_f_measure_ignores_unlabelled_entries_and_absent_attributes():
    probs = torch.tensor([[0.8, 0.3], [0.4, 0.9], [0.1, 0.5], [0.99, 0.2]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, False], [True, False], [False, False]])
    logits = torch.logit(probs)
    # the 4th row is masked out of attribute 0, and attribute 1 has no label at all: only attribute 0 counts
    expected = 1 - 1.3 * 0.9 / 1.9
    assert f_measure_loss(logits, targets, mask).item() == pytest.approx(expected, rel=1e-5)
    nothing = f_measure_loss(logits.requires_grad_(), targets, torch.zeros_like(mask))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_losses_pass_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.double, requires_grad=True)
    c = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    y = torch.tensor([0, 1, 1, 3, 2])
    assert torch.autograd.gradcheck(lambda a, b: center_loss(a, y, b), (x, c))
    assert torch.autograd.gradcheck(lambda a, b: contrastive_center_loss(a, y, b), (x, c))
    w = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(exclusive_regularization, (w,))
    logits = torch.randn(6, 2, dtype=torch.double, requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.double)
    for variant in ("floss", "logfloss"):
        assert torch.autograd.gradcheck(lambda z: f_measure_loss(z, t, variant=variant), (logits,))


def test_f_measure_gradient_matches_the_seed_formula():
    # seed 000, eq. 3.15: dL/dp_i = (1 + b2) TP / H^2 - (1 + b2) y_i / H
    p = torch.tensor([0.8, 0.4, 0.1, 0.6], dtype=torch.double, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.double)
    f = relaxed_f_measure(p.view(-1, 1), y.view(-1, 1), eps=0.0)
    (1 - f).sum().backward()
    tp = float((p * y).sum().detach())
    h = 0.3 * float(y.sum()) + float(p.sum().detach())  # b2 (TP + FN) + TP + FP = b2 * sum(y) + sum(p)
    expected = 1.3 * tp / h ** 2 - 1.3 * y / h
    assert torch.allclose(p.grad, expected)


def test_wen_center_update_by_hand():
    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    features = torch.tensor([[1.0, 2.0], [3.0, 1.0], [2.0, 2.0]])
    update_centers(centers, features, torch.tensor([0, 0, 1]), alpha=0.5)
    # class 0: n = 2, sum(c - x) = (-4, -3), / 3, * 0.5 -> c = (2/3, 1/2)
    # class 1: n = 1, (c - x) = (-1, -1), / 2, * 0.5 -> c = (1.25, 1.25); class 2 untouched
    assert torch.allclose(centers, torch.tensor([[2 / 3, 0.5], [1.25, 1.25], [5.0, 5.0]]))


def test_feature_centers_keep_every_parameter_in_the_graph():
    torch.manual_seed(0)
    centers = FeatureCenters({"a/Hair": (3, 4), "b/Id": (5, 4)}, center=True, contrastive=True)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    losses = centers({"a/Hair": x}, {"a/Hair": y})
    assert set(losses) == {"a/Hair/center", "a/Hair/contrastive_center", "b/Id/center", "b/Id/contrastive_center"}
    sum(losses.values()).backward()
    # the head without labels in this batch contributes 0 but still has a gradient (DDP needs that)
    assert losses["b/Id/contrastive_center"].item() == 0.0
    assert all(p.grad is not None for p in centers.parameters())
    before = centers.centers("a/Hair").clone()
    centers.update({"a/Hair": x}, {"a/Hair": y}, alpha=0.5)
    assert not torch.equal(before, centers.centers("a/Hair"))
    assert torch.equal(centers.centers("b/Id"), torch.zeros(5, 4))


# -- in the trainer --------------------------------------------------------------------------------
def test_joint_supervision_trains_logs_and_resumes(tmp_path, train_attributes):
    options = ["--set", "loss.center=0.1", "--set", "loss.contrastive_center=0.1", "--set", "loss.exclusive=0.1",
               "--set", "loss.f_measure=0.5", "--set", "trainer.deterministic=true", "--set", "optim.warmup_steps=3",
               "--set", "optim.schedule_steps=20", "--set", "trainer.log_every=1"]
    full = train_attributes(tmp_path, "full", 20, *options)
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    for key in ("loss/synthetic/Hair_Color/center", "loss/synthetic/Hair_Color/contrastive_center",
                "loss/synthetic/Hair_Color/exclusive", "loss/synthetic/binary/f_measure"):
        assert all(key in r for r in train_rows), key
    # Wen's centres moved from zero and are checkpointed with the contrastive ones
    state = torch.load(full / "checkpoints" / "latest.pt", weights_only=True)
    saved = state["modules"]["centers"]
    assert saved["center_0"].abs().sum() > 0 and saved["contrastive.0"].shape == (4, 32)
    # the exclusive term falls as the classifier's class weights spread apart
    exclusive = [r["loss/synthetic/Hair_Color/exclusive"] for r in train_rows]
    assert exclusive[-1] < exclusive[0]
    part = train_attributes(tmp_path, "part", 10, *options)
    train_attributes(tmp_path, "part", 20, *options, "--resume")
    resumed = torch.load(part / "checkpoints" / "latest.pt", weights_only=True)
    for module in ("model", "centers"):
        for key, value in state["modules"][module].items():
            assert torch.equal(value, resumed["modules"][module][key]), (module, key)


def test_joint_supervision_changes_training_only_when_weighted(tmp_path, train_attributes):
    base = train_attributes(tmp_path, "base", 4, "--set", "trainer.deterministic=true")
    zero = train_attributes(tmp_path, "zero", 4, "--set", "trainer.deterministic=true", "--set", "loss.f_measure_variant=logfloss")
    with_f = train_attributes(tmp_path, "f", 4, "--set", "trainer.deterministic=true", "--f-measure", "1.0")
    balanced = train_attributes(tmp_path, "balanced", 4, "--set", "trainer.deterministic=true", "--balanced-sampling")
    a, b, c, d = (torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["modules"]["model"]
                  for run in (base, zero, with_f, balanced))
    assert all(torch.equal(a[k], b[k]) for k in a)  # a variant without a weight is off
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert not all(torch.equal(a[k], d[k]) for k in a)  # other faces were drawn
    assert "balance: inverse_frequency" in (balanced / "config.yaml").read_text()
