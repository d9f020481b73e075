"""Evaluation metrics, risk-coverage/AURC, grade tables, plots and the Markdown/JSON report."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from attributes.metrics import (
    age_metrics,
    aurc,
    binary_attribute_metrics,
    categorical_metrics,
    grade_table,
    oracle_aurc,
    risk_coverage,
    selective_summary,
)
from attributes.report import (
    compare_aurc,
    plot_confusion_matrix,
    plot_per_attribute,
    plot_risk_coverage,
    write_evaluation_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_risk_coverage_and_aurc_hand_computed():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, False, False])
    coverage, risk = risk_coverage(conf, correct)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 0, 1 / 3, 0.5])
    perfect = (0 + 0 + 1 / 3 + 1 / 2) / 4
    assert aurc(conf, correct) == pytest.approx(perfect)
    assert oracle_aurc(4, 2) == pytest.approx(perfect)  # perfect ranking reaches the oracle
    reversed_ = (1 + 1 + 2 / 3 + 2 / 4) / 4
    assert aurc(conf[::-1].copy(), correct) == pytest.approx(reversed_)
    assert reversed_ > perfect
    summary = selective_summary(conf, correct)
    assert summary["e_aurc"] == pytest.approx(0.0) and summary["accuracy"] == 0.5 and summary["count"] == 4
    assert selective_summary(conf[::-1].copy(), correct)["e_aurc"] == pytest.approx(reversed_ - perfect)


def test_ties_are_order_independent():
    conf = np.array([0.5, 0.5, 0.9])
    correct = np.array([False, True, True])
    # 0.9 first (right), then a tie of one right and one wrong: expected errors 0.5, 1
    expected = (0 + 0.5 / 2 + 1 / 3) / 3
    assert aurc(conf, correct) == pytest.approx(expected)
    assert aurc(conf[[1, 0, 2]], correct[[1, 0, 2]]) == pytest.approx(expected)
    coverage, risk = risk_coverage(torch.tensor(conf), torch.tensor(correct))
    np.testing.assert_allclose(coverage, [1 / 3, 1.0])
    np.testing.assert_allclose(risk, [0.0, 1 / 3])
    # a constant confidence cannot rank: AURC is the error rate
    assert aurc(np.full(5, 0.7), np.array([1, 0, 1, 1, 0], bool)) == pytest.approx(0.4)
    assert math.isnan(aurc(np.zeros(0), np.zeros(0, bool)))


def test_age_mae_and_cumulative_score():
    m = age_metrics(torch.tensor([20.0, 30.0, 41.0, 50.5]), torch.tensor([25.0, 30.0, 35.0, 50.0]), ks=(1, 10))
    assert m["mae"] == pytest.approx(2.875)
    assert m["cs5"] == pytest.approx(0.75)  # |error| = 5 counts
    assert m["cs"] == {"1": pytest.approx(0.5), "5": pytest.approx(0.75), "10": pytest.approx(1.0)}
    assert m["count"] == 4


def test_binary_metrics_constant_predictor_has_balanced_accuracy_half():
    n = 100
    targets = torch.zeros(n, 2)
    targets[:80, 0] = 1  # 80% positive
    targets[:10, 1] = 1
    probs = torch.full((n, 2), 0.9)  # always "yes"
    mask = torch.ones(n, 2, dtype=torch.bool)
    mask[50:, 1] = False
    m = binary_attribute_metrics(probs, targets, mask, ["Smiling", "Bald"])
    a, b = m["per_attribute"]["Smiling"], m["per_attribute"]["Bald"]
    assert a["accuracy"] == pytest.approx(0.8) and a["balanced_accuracy"] == pytest.approx(0.5)
    assert a["positive_rate"] == pytest.approx(0.8) and a["predicted_positive_rate"] == 1.0 and a["count"] == 100
    assert b["count"] == 50 and b["accuracy"] == pytest.approx(0.2)
    # always "yes": TP 80, FP 20, FN 0 -> F1 = 160 / 180; Bald: TP 10, FP 40 -> 20 / 60
    assert a["f1"] == pytest.approx(160 / 180) and a["positives"] == 80
    assert b["f1"] == pytest.approx(20 / 60) and b["positives"] == 10
    assert m["mean_accuracy"] == pytest.approx(0.5) and m["mean_balanced_accuracy"] == pytest.approx(0.5)
    # per-attribute thresholds: 0.95 turns attribute 0 into "always no"
    t = binary_attribute_metrics(probs, targets, mask, ["Smiling", "Bald"], threshold=torch.tensor([0.95, 0.5]))
    assert t["per_attribute"]["Smiling"]["accuracy"] == pytest.approx(0.2)
    assert t["per_attribute"]["Bald"]["accuracy"] == pytest.approx(0.2)
    assert t["per_attribute"]["Smiling"]["f1"] == 0.0  # no positive predicted


def test_binary_metrics_unlabelled_attribute_is_left_out_of_means():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[True, False], [True, False]])
    m = binary_attribute_metrics(probs, targets, mask, ["a", "b"])
    assert m["per_attribute"]["b"]["accuracy"] is None and m["mean_accuracy"] == 1.0 and m["attributes"] == 1


def test_categorical_metrics_confusion_and_balanced_accuracy():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    probs = torch.eye(3)[torch.tensor([0, 0, 1, 1, 2, 2])]
    m = categorical_metrics(probs, targets, ["young", "adult", "old"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["per_class"]["adult"] == {"count": 2, "recall": 0.5, "precision": 0.5}
    constant = categorical_metrics(torch.eye(3)[torch.zeros(6, dtype=torch.long)], targets, ["a", "b", "c"])
    assert constant["balanced_accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="class indices"):
        categorical_metrics(probs, torch.tensor([0, 0, 0, 1, 1, 3]), ["a", "b", "c"])


def test_grade_table_counts_accuracy_and_empty_grades():
    conf = np.array([0.95, 0.8, 0.85, 0.61, 0.1, 0.0])
    correct = np.array([True, True, False, True, False, True])
    rows = grade_table(conf, correct)
    assert [r["grade"] for r in rows] == ["S", "A", "B", "C", "D"]
    assert [r["count"] for r in rows] == [3, 1, 0, 0, 2]
    assert rows[0]["accuracy"] == pytest.approx(2 / 3) and rows[1]["accuracy"] == 1.0
    assert rows[2]["accuracy"] is None and rows[4]["accuracy"] == 0.5
    assert rows[0]["coverage"] == 0.5 and rows[1]["cumulative_coverage"] == pytest.approx(4 / 6)
    assert rows[1]["cumulative_accuracy"] == pytest.approx(3 / 4)
    assert rows[0]["range"] == "[0.8, 1.0]" and rows[1]["range"] == "[0.6, 0.8)"


def test_plots_write_png(tmp_path):
    coverage, risk = risk_coverage(np.array([0.9, 0.5, 0.1]), np.array([True, False, True]))
    paths = [
        plot_risk_coverage({"sa_softmax": (coverage, risk)}, tmp_path / "rc.png", "rc"),
        plot_confusion_matrix([[3, 1], [0, 2]], ["no", "yes"], tmp_path / "cm.png", "cm"),
        plot_per_attribute({"Smiling": 0.9, "Bald": None}, tmp_path / "sub" / "bars.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC


def _results(tmp_path, sa_conf, max_conf, correct):
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(40, 3, generator=gen)
    targets = (torch.rand(40, 3, generator=gen) > 0.5).float()
    mask = torch.ones(40, 3, dtype=torch.bool)
    names = ["Smiling", "Male", "Eyeglasses"]
    binary = {"threshold_0.5": binary_attribute_metrics(probs, targets, mask, names),
              "calibrated": binary_attribute_metrics(probs, targets, mask, names, threshold=torch.tensor([0.4, 0.5, 0.6]))}
    cat = categorical_metrics(torch.eye(3)[torch.tensor([0, 1, 2, 2])], torch.tensor([0, 1, 1, 2]), ["0-20", "21-50", "51+"])
    cat["confusion_png"] = plot_confusion_matrix(cat["confusion_matrix"], cat["class_names"], tmp_path / "cm_age.png").name
    curves = {m: risk_coverage(c, correct) for m, c in (("sa_softmax", sa_conf), ("max_softmax", max_conf))}
    png = plot_risk_coverage(curves, tmp_path / "rc_celeba.png", "celeba")
    methods = {"sa_softmax": selective_summary(sa_conf, correct),
               # the shape `attributes.evaluate` writes: no oracle/E-AURC, derived by the report
               "max_softmax": {"aurc": aurc(max_conf, correct), "grades": grade_table(max_conf, correct),
                               "count": len(correct), "accuracy": float(correct.mean())}}
    return {
        "checkpoint": "runs/x/checkpoints/best.pt", "step": 1200, "split": "test",
        "datasets": {"celeba": {
            "faces": 40, "head": "celeba", "binary": binary, "per_attribute_png": "per_attribute_celeba.png",
            "categorical": {"age_group": cat},
            "age": {"age": age_metrics(np.array([20.0, 33.0]), np.array([25.0, 30.0]))},
            "selective": {"binary": {"methods": methods, "curve_png": png.name}},
        }, "lfw (head celeba)": {
            "faces": 2, "binary": {"Male": {"threshold_0.5": binary_attribute_metrics(
                torch.tensor([[0.7], [0.2]]), torch.tensor([[1.0], [1.0]]), torch.ones(2, 1, dtype=torch.bool), ["Male"])}},
            "selective": {"Male": {"methods": {"max_softmax": {"aurc": float("nan"), "count": 0, "accuracy": None}}}},
        }},
    }


def test_report_files_and_tables(tmp_path):
    rng = np.random.default_rng(0)
    correct = rng.random(200) < 0.7
    sa_conf = np.where(correct, 0.6 + 0.4 * rng.random(200), 0.5 * rng.random(200))  # separates well
    max_conf = rng.random(200)  # uninformative
    files = write_evaluation_report(_results(tmp_path, sa_conf, max_conf, correct), tmp_path)
    assert set(files) == {"json", "markdown"}
    data = json.loads(files["json"].read_text())
    assert data["datasets"]["celeba"]["binary"]["threshold_0.5"]["per_attribute"]["Male"]["count"] == 40
    assert data["datasets"]["lfw (head celeba)"]["selective"]["Male"]["methods"]["max_softmax"]["aurc"] is None  # NaN -> null
    md = files["markdown"].read_text()
    assert "| Attribute | Accuracy (threshold_0.5) | Balanced acc. (threshold_0.5) | Accuracy (calibrated) |" in md
    assert "| **mean** |" in md and "### Binary attributes (Male)" in md
    assert "| Task | MAE (years) | CS(5) |" in md and "| age | 4.000 | 1.0000 |" in md
    assert "| true \\ pred | 0-20 | 21-50 | 51+ |" in md and "![confusion matrix of age_group](cm_age.png)" in md
    assert "| Method | AURC | Oracle AURC | E-AURC | Accuracy | Count |" in md
    assert "![risk-coverage of binary](rc_celeba.png)" in md and "![accuracy per attribute](per_attribute_celeba.png)" in md
    for letter in "SABCD":
        assert f"\n| {letter} | " in md
    assert "sa_softmax: images | sa_softmax: accuracy" in md
    assert "Lowest AURC: **`sa_softmax`**" in md
    # E-AURC of the entry without one is derived from its count and accuracy
    max_line = next(line for line in md.splitlines() if line.startswith("| `max_softmax` |") and "| 200 |" in line)
    cells = [c.strip() for c in max_line.strip("|").split("|")]
    assert float(cells[3]) == pytest.approx(aurc(max_conf, correct) - oracle_aurc(200, int((~correct).sum())), abs=1e-4)


def test_report_comparison_is_computed_not_fixed(tmp_path):
    rng = np.random.default_rng(1)
    correct = rng.random(100) < 0.7
    good = np.where(correct, 0.6 + 0.4 * rng.random(100), 0.5 * rng.random(100))
    bad = rng.random(100)
    md = write_evaluation_report(_results(tmp_path, bad, good, correct), tmp_path)["markdown"].read_text()
    assert "Lowest AURC: **`max_softmax`**" in md and "**`sa_softmax`**" not in md
    assert compare_aurc({"a": {"aurc": 0.1}, "b": {"aurc": 0.1}}).startswith("Lowest AURC: tie")
    assert "nothing to compare" in compare_aurc({"a": {"aurc": 0.1}, "b": {"aurc": float("nan")}})


def test_recognized_summary_calls_unrecognizable_where_the_extra_output_is_largest(tmp_path):
    from attributes.metrics import recognized_summary
    from attributes.sa_softmax import sa_predict

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 4, generator=generator) * 2  # 3 real classes and "unrecognizable"
    targets = torch.randint(0, 3, (500,), generator=generator)
    prediction = sa_predict(logits)
    correct = (prediction.pred == targets).numpy()
    called = logits.argmax(-1) == 3
    summary = recognized_summary(prediction.confidence.numpy(), prediction.probs.max(-1).values.numpy(), correct)
    assert summary["unrecognizable"] == int(called.sum()) > 50 and summary["recognized"] == int((~called).sum())
    assert summary["accuracy"] == pytest.approx(correct.mean())
    assert summary["accuracy_recognized"] == pytest.approx(correct[~called.numpy()].mean())
    with pytest.raises(ValueError, match="3 confidences"):
        recognized_summary(np.ones(3), np.ones(4), np.ones(4, bool))
    # the report states it
    results = {"datasets": {"utkface": {"faces": 500, "selective": {"Race": {
        "methods": {"sa_softmax": {"aurc": 0.1, "count": 500, "accuracy": summary["accuracy"]}}, "recognized": summary}}}}}
    md = write_evaluation_report(results, tmp_path)["markdown"].read_text()
    assert (f"over the {summary['recognized']} not called unrecognizable ({summary['unrecognizable']} called "
            "unrecognizable") in md


def test_paired_bootstrap_resamples_whole_groups_and_brackets_the_difference():
    from attributes.metrics import paired_bootstrap

    groups = np.repeat(np.arange(50), 4)  # 50 people, 4 faces each
    seen = []

    def statistic(rows):
        seen.append(rows)
        return float(len(rows))

    paired_bootstrap(statistic, groups, n_boot=20, seed=1)
    for rows in seen:  # a person's faces come and go together
        counts = np.bincount(groups[rows], minlength=50)
        assert len(rows) == 200 and np.all(counts % 4 == 0)
    rng = np.random.default_rng(0)
    better = rng.random(200) < 0.9
    worse = rng.random(200) < 0.6
    result = paired_bootstrap(lambda i: float(better[i].mean() - worse[i].mean()), groups, n_boot=500)
    assert result["value"] == pytest.approx(better.mean() - worse.mean())
    assert 0 < result["low"] < result["value"] < result["high"] and result["p_two_sided"] < 0.01
    assert (result["groups"], result["predictions"]) == (50, 200)
    same = paired_bootstrap(lambda i: float(better[i].mean() - better[i].mean()), groups, n_boot=50)
    assert same["low"] == same["high"] == 0 and same["p_two_sided"] == 1.0
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(statistic, groups, level=1.5)
