"""Mixup across the dataset-parallel batch: partners, the loss, refusals, and an exact resume."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attributes.heads import TaskGroup
from attributes.multidataset import mixup_partners
from attributes.step import AugmentConfig, _mixed_loss
from data_prep.datasets.schema import TaskKind
from engine.config import ConfigError


def test_partners_stay_in_their_own_dataset_slice():
    layout = [("celeba", 5), ("lfw", 3)]
    lam, partners = mixup_partners(layout, 2, 0.4, torch.Generator().manual_seed(0))
    assert 0.0 <= lam <= 1.0
    assert sorted(partners[:5].tolist()) == [0, 1, 2, 3, 4]
    assert sorted(partners[5:8].tolist()) == [5, 6, 7]
    assert sorted(partners[8:].tolist()) == [8, 9]  # the unlabelled faces pair among themselves
    again = mixup_partners(layout, 2, 0.4, torch.Generator().manual_seed(0))
    assert again[0] == lam and torch.equal(again[1], partners)


def test_beta_weight_follows_alpha():
    g = torch.Generator().manual_seed(1)
    small = [mixup_partners([("a", 2)], 0, 0.1, g)[0] for _ in range(400)]
    large = [mixup_partners([("a", 2)], 0, 8.0, g)[0] for _ in range(400)]
    # Beta(0.1, 0.1) puts its mass near 0 and 1; Beta(8, 8) near 0.5. Both have mean 0.5.
    near_edges = lambda xs: sum(min(x, 1 - x) < 0.1 for x in xs) / len(xs)  # noqa: E731
    assert near_edges(small) > 0.6 and near_edges(large) < 0.05
    assert abs(sum(small) / 400 - 0.5) < 0.08 and abs(sum(large) / 400 - 0.5) < 0.03


def test_mixed_bce_equals_bce_on_blended_targets():
    group = TaskGroup(name="binary", kind=TaskKind.BINARY, tasks=[], columns=[0, 1, 2])
    torch.manual_seed(0)
    out = torch.randn(6, 3)
    targets = (torch.rand(6, 3) > 0.5).float()
    mask = torch.ones(6, 3, dtype=torch.bool)
    local = torch.tensor([3, 2, 0, 1, 5, 4])  # each face's partner within this dataset's batch
    own = F.binary_cross_entropy_with_logits(out, targets)
    lam = 0.3
    mixed = _mixed_loss(group, out, targets, mask, own, lam, local)
    blended = lam * targets + (1 - lam) * targets[local]
    assert torch.allclose(mixed, F.binary_cross_entropy_with_logits(out, blended), atol=1e-6)


def test_mixed_loss_keeps_the_labelled_side_when_the_partner_has_none():
    group = TaskGroup(name="Age", kind=TaskKind.REGRESSION, tasks=[], columns=[0])
    out = torch.tensor([[3.0], [5.0]])
    targets = torch.tensor([[2.0], [0.0]])
    mask = torch.tensor([[True], [False]])
    own = (out[0, 0] - targets[0, 0]).abs() / 10.0
    # Face 0's partner is face 1, which has no age: the partner's term has only face 1's
    # partner (face 0) to score, so both terms exist and blend.
    mixed = _mixed_loss(group, out, targets, mask, own, 0.25, torch.tensor([1, 0]))
    partner_term = (out[1, 0] - targets[0, 0]).abs() / 10.0
    assert torch.allclose(mixed, 0.25 * own + 0.75 * partner_term)
    # No labelled face at all on the partner's side: the own term keeps its full weight.
    only_self = _mixed_loss(group, out, targets, mask, own, 0.25, torch.tensor([1, 1]))
    assert torch.allclose(only_self, own)


def test_mixup_settings_are_checked():
    with pytest.raises(ConfigError, match="mixup"):
        AugmentConfig(mixup=-0.1)


def test_mixup_refuses_sa_softmax(tmp_path, train_attributes, capsys):
    from transfer.cli import main

    argv = ["attributes", "train", "--dataset", "synthetic", "--out", str(tmp_path / "run"), "--steps", "2",
            "--sa-softmax", "--set", "augment.mixup=0.2", "--set", f"datasets.synthetic.root={tmp_path / 'synthetic'}",
            "--set", f"datasets.synthetic.cache_dir={tmp_path / 'cache'}", "--set", "datasets.synthetic.synthetic_identities=40",
            "--threads", "1"]
    assert main(argv) == 2
    assert "SA-softmax" in capsys.readouterr().err


def test_mixup_run_trains_every_head_kind_and_resumes_exactly(tmp_path, train_attributes):
    common = ["--set", "augment.mixup=0.4", "--set", "trainer.deterministic=true", "--set", "optim.warmup_steps=3",
              "--set", "optim.schedule_steps=12"]
    full = train_attributes(tmp_path, "full", 12, *common)
    part = train_attributes(tmp_path, "part", 6, *common)
    train_attributes(tmp_path, "part", 12, *common, "--resume")
    plain = train_attributes(tmp_path, "plain", 12, *common[2:])
    a = torch.load(full / "checkpoints" / "latest.pt", weights_only=True)["modules"]["model"]
    b = torch.load(part / "checkpoints" / "latest.pt", weights_only=True)["modules"]["model"]
    c = torch.load(plain / "checkpoints" / "latest.pt", weights_only=True)["modules"]["model"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
        assert torch.isfinite(value.float()).all(), key
    assert any(not torch.equal(value, c[key]) for key, value in a.items() if value.is_floating_point())
