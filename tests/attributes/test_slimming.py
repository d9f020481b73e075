"""Network slimming (attributes/slimming.py): the adaptive L1 rule by hand, exact channel removal,
and `--slim` training followed by `attributes prune`."""
from __future__ import annotations

import json

import pytest
import torch

from attributes.model import ModelConfig, build_attribute_model
from attributes.slimming import (
    AdaptiveL1,
    SlimConfig,
    bn_scales,
    channels_to_keep,
    count_flops,
    count_parameters,
    prune_model,
    sparsity,
)
from attributes.trunks import TrunkConfig
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from engine.errors import FaceganError
from transfer.cli import main

SCHEMA = LabelSchema((Task("Smiling", TaskKind.BINARY), Task("Hair", TaskKind.CATEGORICAL, ("a", "b", "c"))))


def _model(seed=0):
    torch.manual_seed(seed)
    return build_attribute_model(ModelConfig(trunk=TrunkConfig("alexnet_bn", 64, 0.125)), {"d": SCHEMA}).eval()


def test_adaptive_rule_by_hand():
    rule = AdaptiveL1(SlimConfig(target=0.5, l1=0.0, step="additive", delta=1.0, adjust_every=50), max_steps=200)  # N = 4
    geometric = AdaptiveL1(SlimConfig(target=0.5, l1=0.0, delta=1.0, growth=1.0, adjust_every=50), max_steps=200)
    lambdas, multiplied = [], []
    for p in (0.0, 0.3, 0.35, 0.6):
        rule.observe(p)
        geometric.observe(p)
        lambdas.append(rule.lam)
        multiplied.append(geometric.lam)
    # t=1: 0 - 0 < 0.5/4 -> +1; t=2: 0.3 >= 0.5/3, not past -> 1; t=3: 0.05 < 0.2/2 -> +1; t=4: 0.25 >= 0.15/1, 0.6 > 0.5 -> -1
    assert lambdas == [1.0, 1.0, 2.0, 1.0]
    # the same decisions, as a doubling from delta and a halving: 0 -> delta = 1, hold, x2, /2
    assert multiplied == [1.0, 1.0, 2.0, 1.0]
    geometric.observe(0.6)  # t=5 past N, still past r: /2 again; it never reaches 0, so it can rise again
    assert geometric.lam == 0.5
    fixed = AdaptiveL1(SlimConfig(target=0.5, adaptive=False, l1=3.0), max_steps=200)
    fixed.observe(0.0)
    assert fixed.lam == 3.0
    restored = AdaptiveL1(SlimConfig(target=0.5, delta=1.0), max_steps=200)
    restored.load_state_dict(rule.state_dict())
    assert restored.state_dict() == rule.state_dict()
    with pytest.raises(ValueError):
        AdaptiveL1(SlimConfig(target=1.5), max_steps=10)
    with pytest.raises(ValueError):
        AdaptiveL1(SlimConfig(target=0.5, step="exponential"), max_steps=10)
    with pytest.raises(ValueError):
        AdaptiveL1(SlimConfig(target=0.5, delta=0.0), max_steps=10)


def test_sparsity_global_and_per_layer_by_hand():
    model = _model()
    scales = bn_scales(model)
    with torch.no_grad():
        for w in scales:
            w.fill_(1.0)
        scales[0][:4] = 0.01  # sparse under both rules
        scales[1].fill_(0.04)  # 4% of the global max (1.0) but the max of its own layer
    total = sum(w.numel() for w in scales)
    assert sparsity(model, 0.05, "global") == pytest.approx((4 + scales[1].numel()) / total)
    assert sparsity(model, 0.05, "per_layer") == pytest.approx(4 / total)


def test_pruning_removes_dead_channels_exactly_and_keeps_every_layer():
    model = _model()
    scales = bn_scales(model)
    units = [s.numel() for s in scales]
    torch.manual_seed(1)
    dead = []
    with torch.no_grad():
        for unit, w in zip(model.trunk.features, scales):
            w.copy_(torch.rand_like(w) + 0.5)
        for layer, w in enumerate(scales):  # half of every layer's channels output exactly zero
            idx = torch.arange(0, w.numel(), 2)
            w[idx] = 0.0
            bn = [m for m in model.trunk.features if hasattr(m, "__getitem__")][layer][1]
            bn.bias[idx] = 0.0
            dead.append(idx)
    x = torch.randn(3, 3, 64, 64)
    pruned, channels = prune_model(model, ratio=0.5)
    assert channels == [n - len(d) for n, d in zip(units, dead)]
    a, b = model(x, [("d", 3)])[0]["d"], pruned(x, [("d", 3)])[0]["d"]
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert count_parameters(pruned) < count_parameters(model)
    assert count_flops(pruned, "d") < 0.5 * count_flops(model, "d")
    # a global threshold may empty a layer; min_keep stops it
    with torch.no_grad():
        scales[2].fill_(1e-6)
    keep = channels_to_keep(model, 0.5, min_keep=0.25)
    assert len(keep[2]) == max(1, -(-units[2] // 4))
    with pytest.raises(FaceganError):
        channels_to_keep(model, 1.0)


def test_slimmed_training_then_prune_command(tmp_path, train_attributes):
    run = train_attributes(tmp_path, "slim", 40, "--slim", "0.5", "--set", "slim.adjust_every=5",
                           "--set", "slim.delta=0.001", "--set", "trainer.log_every=5")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    lambdas = [r["slim/lambda"] for r in rows if "slim/lambda" in r]
    assert lambdas and lambdas[-1] > 0  # the coefficient grew from 0 by itself
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step_state"]["slim"]["t"] == 8 and state["step_state"]["slim"]["lam"] > 0
    # best.pt only among evaluations whose trunk had reached the 50% target: what gets pruned must be that sparse
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("split") == "eval"]
    assert len(evals) == 4 and all("slim/sparsity" in r for r in evals)
    for r in evals:
        assert ("score" in r) == (r["slim/sparsity"] >= 0.5)
        assert ("score_before_target" in r) == (r["slim/sparsity"] < 0.5)
    assert (run / "checkpoints" / "best.pt").is_file() == any("score" in r for r in evals)

    out = tmp_path / "pruned"
    assert main(["attributes", "prune", str(run / "checkpoints" / "latest.pt"), "--out", str(out), "--ratio", "0.5",
                 "--finetune-steps", "6", "--no-progress", "--threads", "1"]) == 0
    report = json.loads((out / "prune.json").read_text())
    original, pruned = report["channels"]["original"], report["channels"]["pruned"]
    assert sum(pruned) == sum(original) - round(0.5 * sum(original))
    assert report["flops"]["pruned"] < report["flops"]["original"]
    assert set(report["accuracy"]) == {"original", "pruned", "finetuned"}
    assert report["slim"]["target"] == 0.5  # the settings it was trained with
    assert report["images_per_second"]["pruned"] > 0 and "FLOPs per face" in (out / "prune.md").read_text()
    # the pruned model is an ordinary checkpoint
    from attributes.inference import load_attribute_model

    loaded = load_attribute_model(out / "pruned.pt")
    assert loaded.config.model.trunk.channels == pruned
    assert main(["attributes", "predict", str(out / "pruned.pt"), str(tmp_path / "synthetic"), "--out",
                 str(tmp_path / "p.json")]) == 0
    # by default the trained (raw) weights are pruned, the ones the L1 acted on, not their lagging EMA
    raw = load_attribute_model(run / "checkpoints" / "latest.pt", use_ema=False).model
    ema = load_attribute_model(run / "checkpoints" / "latest.pt", use_ema=True).model
    assert report["weights"] == "raw"
    kept_scales = bn_scales(load_attribute_model(out / "pruned.pt").model)
    for keep, raw_scale, ema_scale, got in zip(channels_to_keep(raw, 0.5), bn_scales(raw), bn_scales(ema), kept_scales):
        assert torch.equal(got, raw_scale[keep])
        assert not torch.equal(got, ema_scale[keep])


def test_a_slimmed_run_reaching_its_target_competes_for_best(tmp_path, train_attributes):
    # tau just above 1: every channel counts as sparse (|gamma| < 1.01 max |gamma|), so the 50% target is met at once
    run = train_attributes(tmp_path, "slim", 10, "--slim", "0.5", "--set", "slim.tau=1.01")
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("split") == "eval"]
    assert len(evals) == 1 and evals[0]["slim/sparsity"] >= 0.5 and "score" in evals[0]
    assert (run / "checkpoints" / "best.pt").is_file()
