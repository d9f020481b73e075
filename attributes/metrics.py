"""Metrics of attribute predictions and selective prediction (risk-coverage, AURC, grades).

Every metric takes torch tensors or numpy arrays and returns plain Python numbers (JSON-ready);
a metric with nothing to measure is None (or NaN for the float-valued `aurc`).

Selective prediction
--------------------
Predictions are sorted by confidence, most confident first. At coverage k/N the risk is the
error rate among the k most confident. `risk_coverage` returns one point per distinct
confidence value (all ties are accepted together, as a threshold on the confidence does), so
the curve does not depend on the order of tied predictions.

AURC = (1/N) * sum_{k=1..N} risk(k), the mean risk over the N coverages k/N (Geifman et al.,
ICLR 2019). Inside a group of tied confidences the group's errors are spread evenly over its
positions, i.e. the expectation over every ordering of the ties: a constant confidence gives
AURC = overall error rate. The oracle AURC ranks every correct prediction before every error
(it depends only on N and the number of errors); E-AURC = AURC - oracle >= 0.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from attributes.sa_softmax import GRADE_LOWER_BOUNDS, GRADES, grade_index

__all__ = [
    "recognized_summary",
    "paired_bootstrap",
    "balanced_accuracy",
    "binary_attribute_metrics",
    "categorical_metrics",
    "age_metrics",
    "risk_coverage",
    "aurc",
    "oracle_aurc",
    "selective_summary",
    "grade_table",
]


def _np(x: Any, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float().numpy() if x.dtype in (torch.float16, torch.bfloat16) else x.numpy()
    return np.asarray(x, dtype=dtype)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


# -- classification ---------------------------------------------------------------------------
def balanced_accuracy(y_true, y_pred) -> float:
    """Mean per-class recall over the classes present in `y_true`; nan for no items.

    A predicted class that never occurs in `y_true` only counts as an error: it has no recall
    of its own to average.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shapes {t.shape} and {p.shape}")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} items but y_pred has {len(p)}")
    if len(t) == 0:
        return float("nan")
    classes, cls = np.unique(t, return_inverse=True)
    totals = np.bincount(cls, minlength=len(classes))
    correct = np.bincount(cls, weights=(t == p), minlength=len(classes))
    return float(np.mean(correct / totals))


def binary_attribute_metrics(probs, targets, mask, names: Sequence[str], threshold: float | Any = 0.5) -> dict[str, Any]:
    """Per-attribute accuracy, balanced accuracy (mean of the recalls of the classes present),
    F1 of the positive class (None without labelled positives), positive rate (prevalence among
    the labelled), the number of positives, predicted positive rate and count, for
    `probs` P(yes) `[N, T]`, targets `[N, T]` in {0, 1} and `mask` `[N, T]` (labelled entries).
    `threshold` is a float or one per attribute; P >= threshold predicts yes. Means over the
    attributes with at least one label: `mean_accuracy`, `mean_balanced_accuracy`."""
    p, t, m = _np(probs, np.float64), _np(targets, np.float64), _np(mask, bool)
    if p.ndim != 2 or p.shape != t.shape or p.shape != m.shape:
        raise ValueError(f"probs {p.shape}, targets {t.shape} and mask {m.shape} must be the same [N, T]")
    if len(names) != p.shape[1]:
        raise ValueError(f"{len(names)} names for {p.shape[1]} attributes")
    thresholds = np.broadcast_to(_np(threshold, np.float64), (p.shape[1],))
    per: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        known = m[:, k]
        y = t[known, k] >= 0.5
        pred = p[known, k] >= thresholds[k]
        count = int(known.sum())
        entry: dict[str, Any] = {"count": count, "threshold": float(thresholds[k])}
        if count:
            tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
            entry.update(accuracy=float((pred == y).mean()), balanced_accuracy=balanced_accuracy(y, pred),
                         positive_rate=float(y.mean()), predicted_positive_rate=float(pred.mean()),
                         positives=int(y.sum()), f1=(2 * tp / (2 * tp + fp + fn)) if y.any() else None)
        else:
            entry.update(accuracy=None, balanced_accuracy=None, positive_rate=None, predicted_positive_rate=None,
                         positives=0, f1=None)
        per[name] = entry
    return {
        "per_attribute": per,
        "mean_accuracy": _mean([e["accuracy"] for e in per.values()]),
        "mean_balanced_accuracy": _mean([e["balanced_accuracy"] for e in per.values()]),
        "attributes": sum(1 for e in per.values() if e["count"]),
        "labelled_entries": int(m.sum()),
    }


def categorical_metrics(probs, targets, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean recall over the classes present in `targets`), macro
    precision (over the classes predicted at least once), per-class recall/precision/count
    and the confusion matrix (rows: true class, columns: predicted class) of `probs` `[N, C]`
    against class indices `targets` `[N]`."""
    p, y = _np(probs, np.float64), _np(targets).astype(np.int64).reshape(-1)
    c = len(class_names)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[1] != c:
        raise ValueError(f"probs {p.shape} must be [N, {c}] with N = {y.shape[0]} targets")
    if y.size and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"targets must be class indices in [0, {c}), got values in [{y.min()}, {y.max()}]")
    pred = p.argmax(1) if y.size else np.zeros(0, dtype=np.int64)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    support, predicted = confusion.sum(1), confusion.sum(0)
    diag = np.diag(confusion)
    recall = [float(diag[i] / support[i]) if support[i] else None for i in range(c)]
    precision = [float(diag[i] / predicted[i]) if predicted[i] else None for i in range(c)]
    return {
        "count": int(y.size),
        "accuracy": float(diag.sum() / y.size) if y.size else None,
        "balanced_accuracy": balanced_accuracy(y, pred) if y.size else None,
        "macro_precision": _mean(precision),
        "per_class": {name: {"count": int(support[i]), "recall": recall[i], "precision": precision[i]}
                      for i, name in enumerate(class_names)},
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
    }


def age_metrics(pred_age, true_age, ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, Any]:
    """MAE in years and CS(k), the cumulative score: the fraction with |error| <= k years
    (inclusive), for every k in `ks` and always k = 5 (`cs5`)."""
    pred, true = _np(pred_age, np.float64).reshape(-1), _np(true_age, np.float64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.size} predicted ages for {true.size} true ones")
    error = np.abs(pred - true)
    ks = sorted(set(int(k) for k in ks) | {5})
    n = int(error.size)
    return {
        "count": n,
        "mae": float(error.mean()) if n else None,
        "rmse": float(np.sqrt((error ** 2).mean())) if n else None,
        "cs5": float((error <= 5).mean()) if n else None,
        "cs": {str(k): (float((error <= k).mean()) if n else None) for k in ks},
    }


# -- selective prediction ---------------------------------------------------------------------
def _sorted_groups(confidence, correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(errors per position in descending-confidence order with ties spread evenly, group end
    positions (1-based counts), cumulative errors at the group ends)."""
    c = _np(confidence, np.float64).reshape(-1)
    ok = _np(correct, bool).reshape(-1)
    if c.shape != ok.shape:
        raise ValueError(f"{c.size} confidences for {ok.size} correctness flags")
    if np.isnan(c).any():
        raise ValueError("confidence contains NaN")
    order = np.argsort(-c, kind="stable")
    c, err = c[order], (~ok[order]).astype(np.float64)
    if c.size == 0:
        return err, np.zeros(0, dtype=np.int64), np.zeros(0)
    ends = np.append(np.nonzero(c[1:] != c[:-1])[0] + 1, c.size)  # exclusive end of each tie group
    starts = np.concatenate([[0], ends[:-1]])
    group_err = np.add.reduceat(err, starts)
    spread = np.repeat(group_err / (ends - starts), ends - starts)
    return spread, ends, np.cumsum(group_err)


def risk_coverage(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) at every distinct confidence threshold, from the most confident one:
    coverage = fraction of predictions with confidence >= threshold, risk = their error rate."""
    _, ends, errors = _sorted_groups(confidence, correct)
    n = ends[-1] if ends.size else 0
    if not n:
        return np.zeros(0), np.zeros(0)
    return ends / n, errors / ends


def aurc(confidence, correct) -> float:
    """Area under the risk-coverage curve (module docstring); NaN when there is no prediction."""
    spread, _, _ = _sorted_groups(confidence, correct)
    if spread.size == 0:
        return math.nan
    k = np.arange(1, spread.size + 1)
    return float(np.mean(np.cumsum(spread) / k))


def oracle_aurc(count: int, errors: int) -> float:
    """The smallest AURC reachable with `errors` errors among `count` predictions."""
    if count <= 0:
        return math.nan
    if not 0 <= errors <= count:
        raise ValueError(f"{errors} errors among {count} predictions")
    k = np.arange(count - errors + 1, count + 1, dtype=np.float64)
    return float(np.sum((k - (count - errors)) / k) / count)


def grade_table(confidence, correct) -> list[dict[str, Any]]:
    """Per grade S..D: confidence range, count, accuracy (None when empty), coverage (its
    share of all predictions), and the cumulative coverage/accuracy of it and every better grade."""
    c = _np(confidence, np.float64).reshape(-1)
    ok = _np(correct, bool).reshape(-1)
    if c.shape != ok.shape:
        raise ValueError(f"{c.size} confidences for {ok.size} correctness flags")
    index = grade_index(torch.from_numpy(c)).numpy() if c.size else np.zeros(0, dtype=np.int64)
    total, rows = c.size, []
    cum_n = cum_ok = 0
    for g, letter in enumerate(GRADES):
        upper = 1.0 if g == 0 else GRADE_LOWER_BOUNDS[g - 1]
        inside = index == g
        n, n_ok = int(inside.sum()), int(ok[inside].sum())
        cum_n, cum_ok = cum_n + n, cum_ok + n_ok
        rows.append({
            "grade": letter,
            "range": f"[{GRADE_LOWER_BOUNDS[g]:.1f}, {upper:.1f}{']' if g == 0 else ')'}",
            "count": n,
            "accuracy": n_ok / n if n else None,
            "coverage": n / total if total else 0.0,
            "cumulative_coverage": cum_n / total if total else 0.0,
            "cumulative_accuracy": cum_ok / cum_n if cum_n else None,
        })
    return rows


def selective_summary(confidence, correct) -> dict[str, Any]:
    """One method's entry of the report's "selective" section: AURC, oracle AURC, E-AURC,
    overall accuracy, count and the grade table."""
    ok = _np(correct, bool).reshape(-1)
    value = aurc(confidence, ok)
    oracle = oracle_aurc(ok.size, int((~ok).sum()))
    return {"aurc": value, "oracle_aurc": oracle, "e_aurc": value - oracle, "count": int(ok.size),
            "accuracy": float(ok.mean()) if ok.size else None, "grades": grade_table(confidence, ok)}


def recognized_summary(confidence, max_softmax, correct) -> dict[str, Any]:
    """An SA-softmax head as the thesis reports it: top-1 over every face, and over the faces it
    does not call unrecognizable. A face is called unrecognizable when the N+1-th output is the
    largest of the softmax over all N+1; with confidence c = 1 - p(unrecognizable) and
    max-softmax m over the N real classes (each real class keeps its share of c), that is
    1 - c > m * c."""
    c = _np(confidence, np.float64).reshape(-1)
    m = _np(max_softmax, np.float64).reshape(-1)
    ok = _np(correct, bool).reshape(-1)
    if not c.shape == m.shape == ok.shape:
        raise ValueError(f"{c.size} confidences, {m.size} max-softmax values and {ok.size} correctness flags")
    recognized = (1.0 - c) <= m * c
    return {"count": int(ok.size), "accuracy": float(ok.mean()) if ok.size else None,
            "recognized": int(recognized.sum()), "unrecognizable": int((~recognized).sum()),
            "accuracy_recognized": float(ok[recognized].mean()) if recognized.any() else None}


def paired_bootstrap(statistic: Callable[[np.ndarray], float], groups: Sequence, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """A percentile interval for `statistic(rows)` (e.g. a difference between two models scored on
    the same predictions) with whole groups resampled: the people (or files) of a test set, so that
    several faces of one person move together. `groups[i]` names the group of prediction i;
    `statistic` receives the indices of one resample (with repeats). Returns the value on all
    predictions, the interval, the share of draws on the other side of 0 doubled (a two-sided
    bootstrap p-value), and the counts."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    _, group_of = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    if group_of.size == 0:
        raise ValueError("no predictions to resample")
    members = np.split(np.argsort(group_of, kind="stable"), np.cumsum(np.bincount(group_of))[:-1])
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        chosen = rng.integers(0, len(members), len(members))
        draws[b] = statistic(np.concatenate([members[g] for g in chosen]))
    value = float(statistic(np.arange(group_of.size)))
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    below, above = float(np.mean(draws <= 0)), float(np.mean(draws >= 0))
    return {"value": value, "low": float(low), "high": float(high), "level": level,
            "p_two_sided": min(1.0, 2 * min(below, above)), "n_boot": n_boot, "groups": len(members),
            "predictions": int(group_of.size)}
