import math

import numpy as np
import pytest

from transfer.stats import (
    Interval,
    PairedResult,
    _counts,
    _weighted_metric,
    accuracy,
    balanced_accuracy,
    bootstrap_ci,
    holm,
    majority_baseline,
    paired_bootstrap,
    verdicts,
)


def _clustered(n_groups=40, per_group=10, right_groups=30, seed=0):
    """Binary labels mixed inside each group; whole groups are either all right or all wrong."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n_groups * per_group)
    groups = np.repeat([f"id{g:03d}" for g in range(n_groups)], per_group)
    right = np.repeat(np.arange(n_groups) < right_groups, per_group)
    pred = np.where(right, y, 1 - y)
    return y, pred, groups


def _noisy(y, p_correct, rng):
    return np.where(rng.random(len(y)) < p_correct, y, 1 - y)


# ----------------------------------------------------------------------------- point metrics


def test_balanced_accuracy_by_hand():
    y, pred = [0, 0, 0, 1], [0, 0, 1, 1]
    assert accuracy(y, pred) == pytest.approx(3 / 4)
    assert balanced_accuracy(y, pred) == pytest.approx((2 / 3 + 1) / 2)


def test_balanced_accuracy_multiclass_ignores_classes_absent_from_truth():
    y = [0, 0, 1, 1, 1, 2]
    pred = [0, 1, 1, 1, 0, 3]  # class 3 is only predicted: an error, not a class to average
    assert balanced_accuracy(y, pred) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert accuracy(y, pred) == pytest.approx(3 / 6)


def test_empty_input_is_nan_and_mismatch_is_an_error():
    assert math.isnan(accuracy([], []))
    assert math.isnan(balanced_accuracy([], []))
    with pytest.raises(ValueError):
        balanced_accuracy([0, 1], [0])


def test_majority_baseline_ties_go_to_the_smallest_label():
    base = majority_baseline([2, 2, 1, 1, 0], [1, 1, 1, 2])
    assert base["label"] == 1
    assert base["accuracy"] == pytest.approx(3 / 4)
    assert base["balanced_accuracy"] == pytest.approx(0.5)
    assert majority_baseline([0, 1, 1], [0, 0, 1])["balanced_accuracy"] == pytest.approx(0.5)


def test_interval_formatting():
    iv = Interval(estimate=0.9123, low=0.89, high=0.9314, level=0.95)
    assert str(iv) == "91.2 [89.0, 93.1]"
    assert iv.to_dict() == {"estimate": 0.9123, "low": 0.89, "high": 0.9314, "level": 0.95}


# ----------------------------------------------------------------------------- bootstrap_ci


def test_all_correct_predictions_give_a_degenerate_interval():
    y, _, groups = _clustered()
    for g in (None, groups):
        for metric in ("accuracy", "balanced_accuracy"):
            iv = bootstrap_ci(y, y, groups=g, metric=metric, n_boot=200)
            assert (iv.estimate, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_one_item_groups_equal_the_item_bootstrap():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.7, y, (y + 1) % 3)
    ids = [f"p{i}" for i in range(300)]
    assert bootstrap_ci(y, pred, groups=ids, seed=3) == bootstrap_ci(y, pred, seed=3)


def test_same_seed_same_interval_other_seed_other_interval():
    y, pred, groups = _clustered(right_groups=25)
    a = bootstrap_ci(y, pred, groups=groups, seed=7)
    assert a == bootstrap_ci(y, pred, groups=groups, seed=7)
    assert a != bootstrap_ci(y, pred, groups=groups, seed=8)


def test_interval_contains_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    pred = _noisy(y, 0.8, rng)
    small = bootstrap_ci(y, pred, n_boot=1000)
    big = bootstrap_ci(np.tile(y, 16), np.tile(pred, 16), n_boot=1000)
    for iv in (small, big):
        assert iv.low <= iv.estimate <= iv.high
    assert big.estimate == pytest.approx(small.estimate)
    # Sixteen times the data: about a quarter of the width.
    assert big.high - big.low < 0.5 * (small.high - small.low)


def test_cluster_bootstrap_is_wider_when_errors_are_clustered():
    y, pred, groups = _clustered(n_groups=40, per_group=10, right_groups=30)
    clustered = bootstrap_ci(y, pred, groups=groups, n_boot=1000)
    items = bootstrap_ci(y, pred, groups=None, n_boot=1000)
    assert clustered.estimate == items.estimate
    # Ten items per group: about sqrt(10) times wider.
    assert clustered.high - clustered.low > 2 * (items.high - items.low)


def test_seed_list_estimate_is_the_mean_of_per_seed_metrics():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 150)
    seeds = [np.where(rng.random(150) < p, y, (y + 1) % 3) for p in (0.5, 0.7, 0.9)]
    iv = bootstrap_ci(y, seeds, n_boot=300)
    assert iv.estimate == pytest.approx(np.mean([balanced_accuracy(y, s) for s in seeds]))
    assert iv.low <= iv.estimate <= iv.high
    acc = bootstrap_ci(y, seeds, metric="accuracy", n_boot=50)
    assert acc.estimate == pytest.approx(np.mean([accuracy(y, s) for s in seeds]))


def test_weighted_counts_equal_explicitly_repeated_items():
    # The vectorised path, checked exactly against the expanded resample it stands for.
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(12), 5)
    y = rng.integers(0, 2, 60)
    y[groups == 11] = 2  # class 2 lives only in group 11, which the resample leaves out
    runs = [np.where(rng.random(60) < p, y, (y + 1) % 3) for p in (0.4, 0.8)]
    counts = _counts(y, runs, groups)
    weights = np.zeros((1, 12))
    weights[0, [0, 3, 4]] = [3, 1, 2]
    idx = np.concatenate([np.flatnonzero(groups == g) for g in (0, 0, 0, 3, 4, 4)])
    assert 2 not in y[idx]
    for metric, fn in (("balanced_accuracy", balanced_accuracy), ("accuracy", accuracy)):
        got = _weighted_metric(counts, weights, metric)[0]
        assert got == pytest.approx([fn(y[idx], run[idx]) for run in runs])


def _slow_cluster_bootstrap(y, pred, groups, n_boot, seed):
    rng = np.random.default_rng(seed)
    keys = np.unique(groups)
    members = {k: np.flatnonzero(groups == k) for k in keys}
    draws = []
    for _ in range(n_boot):
        chosen = rng.choice(keys, size=len(keys), replace=True)
        idx = np.concatenate([members[k] for k in chosen])
        draws.append(balanced_accuracy(y[idx], pred[idx]))
    return np.array(draws)


def test_vectorised_bootstrap_matches_a_slow_reference_in_distribution():
    rng = np.random.default_rng(5)
    n_groups = 60
    sizes = rng.integers(1, 8, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    y = rng.integers(0, 3, len(groups))
    skill = np.repeat(rng.uniform(0.3, 1.0, n_groups), sizes)  # errors clustered by group
    pred = np.where(rng.random(len(y)) < skill, y, (y + 1) % 3)
    n_boot = 2000
    slow = _slow_cluster_bootstrap(y, pred, groups, n_boot, seed=11)
    fast_ci = bootstrap_ci(y, pred, groups=groups, n_boot=n_boot, level=0.9, seed=12)
    fast = paired_bootstrap(y, pred, np.zeros_like(y) - 1, groups=groups, n_boot=n_boot, seed=12).draws
    # Scoring against an always-wrong arm (label -1) makes the difference the metric itself.
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.01)
    assert fast.std() == pytest.approx(slow.std(), rel=0.1)
    assert (fast_ci.low, fast_ci.high) == pytest.approx(tuple(np.quantile(slow, [0.05, 0.95])), abs=0.015)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="metric"):
        bootstrap_ci([0, 1], [0, 1], metric="f1")
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci([0, 1], [0, 1], groups=["a"])
    with pytest.raises(ValueError):
        bootstrap_ci([0, 1], [[0, 1], [0]])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([0, 1], [0, 1], level=95)


# ----------------------------------------------------------------------------- paired


def test_identical_predictions_give_zero_difference_and_p_one():
    y, pred, groups = _clustered(right_groups=25)
    res = paired_bootstrap(y, pred, pred.copy(), groups=groups, n_boot=500)
    assert (res.difference, res.low, res.high, res.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert res.interval(0.99) == (0.0, 0.0)


def test_clearly_better_arm_is_better_and_worse_arm_is_worse():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 600)
    groups = np.repeat(np.arange(100), 6)
    good, bad = _noisy(y, 0.95, rng), _noisy(y, 0.6, rng)
    better = paired_bootstrap(y, good, bad, groups=groups, n_boot=1000)
    worse = paired_bootstrap(y, bad, good, groups=groups, n_boot=1000)
    same = paired_bootstrap(y, bad, bad, groups=groups, n_boot=1000)
    assert better.difference > 0.25 and better.low > 0
    assert better.p_value == pytest.approx(2 / 1001)  # the +1 correction: never 0
    assert worse.difference == pytest.approx(-better.difference)
    out = verdicts({"better": better, "worse": worse, "same": same})
    assert {arm: v["verdict"] for arm, v in out.items()} == {
        "better": "better",
        "worse": "worse",
        "same": "no significant difference",
    }
    assert out["better"]["level"] == pytest.approx(1 - 0.05 / 3)
    assert (out["better"]["low"], out["better"]["high"]) == better.interval(1 - 0.05 / 3)
    # The Holm-level interval is wider than the nominal 95% one.
    assert out["better"]["low"] <= better.low and out["better"]["high"] >= better.high


def test_paired_seed_lists_average_each_side_separately():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 200)
    a = [np.where(rng.random(200) < p, y, (y + 1) % 3) for p in (0.6, 0.8)]
    b = [np.where(rng.random(200) < p, y, (y + 2) % 3) for p in (0.5, 0.6, 0.7)]
    res = paired_bootstrap(y, a, b, n_boot=300)
    expected = np.mean([balanced_accuracy(y, s) for s in a]) - np.mean([balanced_accuracy(y, s) for s in b])
    assert res.difference == pytest.approx(expected)
    assert res.low <= res.difference <= res.high
    assert set(res.to_dict()) == {"difference", "low", "high", "level", "p_value", "n_boot"}
    assert res.draws.shape == (300,)


def test_paired_draws_share_resamples():
    # Two arms that differ on a handful of items: on shared resamples their difference barely
    # moves, whereas independent resamples would give sqrt(2) times a single arm's spread.
    y, pred, groups = _clustered(n_groups=50, right_groups=35)
    other = pred.copy()
    other[:5] = 1 - other[:5]
    res = paired_bootstrap(y, pred, other, groups=groups, n_boot=500)
    single = bootstrap_ci(y, pred, groups=groups, n_boot=500)
    assert res.high - res.low < 0.25 * (single.high - single.low)
    assert isinstance(res, PairedResult)


# ----------------------------------------------------------------------------- holm


def test_holm_by_hand():
    out = holm({"a": 0.01, "b": 0.04, "c": 0.03}, alpha=0.05)
    assert list(out) == ["a", "b", "c"]
    assert {k: v["reject"] for k, v in out.items()} == {"a": True, "b": False, "c": False}
    assert out["a"]["p_adjusted"] == pytest.approx(0.03)
    assert out["c"]["p_adjusted"] == pytest.approx(0.06)
    assert out["b"]["p_adjusted"] == pytest.approx(0.06)  # monotone: max(0.06, 1 * 0.04)
    assert out["a"]["level"] == pytest.approx(1 - 0.05 / 3)
    assert out["c"]["level"] == pytest.approx(1 - 0.05 / 2)
    assert out["b"]["level"] == pytest.approx(0.95)
    assert out["b"]["p"] == 0.04


def test_holm_caps_at_one_and_handles_empty():
    out = holm({"x": 0.6, "y": 0.7})
    assert out["x"]["p_adjusted"] == 1.0 and out["y"]["p_adjusted"] == 1.0
    assert holm({}) == {}
    assert verdicts({}) == {}
    with pytest.raises(ValueError):
        holm({"x": 1.5})
