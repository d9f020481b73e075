"""Metrics, selective prediction (risk-coverage, AURC, grades), plots and the evaluation report.

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

The `results` dict of `write_evaluation_report`
-----------------------------------------------
Top-level scalars (e.g. "checkpoint", "step", "split", "weights", "flip_tta", "compare") are
listed as run information. "datasets" maps a label to a section:

    {
      "faces": int, "head": str,                                   # optional
      "binary": {                                                  # optional
          "threshold_0.5": binary_attribute_metrics(...),         # variants of the group "binary"
          "calibrated": binary_attribute_metrics(...),
          "<other binary group>": {"threshold_0.5": ..., ...},    # other binary groups, nested
      },
      "per_attribute_png": "per_attribute_celeba.png",             # optional, relative to out_dir
      "categorical": {task: categorical_metrics(...) | {"confusion_png": str}},
      "age": {task: age_metrics(...)},
      "selective": {group: {
          "methods": {method: {"aurc": float, "grades": grade_table(...), "count": int,
                               "accuracy": float, "oracle_aurc"?: float, "e_aurc"?: float}},
          "curve_png": str,
      }},
    }

(`selective_summary` builds one "methods" entry.) Method names used by `attributes.evaluation`:
"sa_softmax" (1 - p(unrecognizable)), "max_softmax" (same model), "plain_softmax_model" (a
separately trained plain-softmax model). The report states, per group, which method has the
lowest AURC, computed from the numbers given.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from attributes.sa_softmax import GRADE_LOWER_BOUNDS, GRADES, grade_index
from engine.checkpoint import atomic_write_bytes, atomic_write_text

__all__ = [
    "binary_attribute_metrics",
    "categorical_metrics",
    "age_metrics",
    "risk_coverage",
    "aurc",
    "oracle_aurc",
    "selective_summary",
    "compare_aurc",
    "grade_table",
    "plot_risk_coverage",
    "plot_confusion_matrix",
    "plot_per_attribute",
    "write_evaluation_report",
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
            recalls = [float((pred[y == c] == c).mean()) for c in (False, True) if (y == c).any()]
            tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
            entry.update(accuracy=float((pred == y).mean()), balanced_accuracy=float(np.mean(recalls)),
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
        "balanced_accuracy": _mean(recall),
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


# -- plots ------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    # an explicit Figure (no pyplot): no global state, no display backend needed
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_risk_coverage(curves: Mapping[str, tuple[Any, Any]], path: str | Path, title: str = "Risk-coverage") -> Path:
    """Risk against coverage, one step curve per method (name -> (coverage, risk))."""
    fig = _figure(6, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for name, (coverage, risk) in curves.items():
        coverage, risk = _np(coverage, np.float64), _np(risk, np.float64)
        if coverage.size:
            ax.step(np.concatenate([[0.0], coverage]), np.concatenate([[risk[0]], risk]), where="post", label=name)
    ax.set_xlabel("coverage")
    ax.set_ylabel("risk (error rate among covered)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if curves:
        ax.legend(loc="upper left")
    return _save(fig, path)


def plot_confusion_matrix(matrix, class_names: Sequence[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """Rows true, columns predicted; colour = row-normalised rate, text = counts."""
    counts = _np(matrix, np.float64)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    c = len(class_names)
    fig = _figure(max(4.0, 0.6 * c + 2), max(3.5, 0.6 * c + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(c), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(c), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 20:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                        color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def plot_per_attribute(acc_dict: Mapping[str, float | None], path: str | Path, title: str = "Accuracy per attribute") -> Path:
    """Bar chart of a value per attribute (None bars are left empty) with the mean as a line."""
    names = list(acc_dict)
    values = [np.nan if acc_dict[n] is None else float(acc_dict[n]) for n in names]
    fig = _figure(max(6.0, 0.25 * len(names) + 2), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), values, color="tab:blue")
    present = [v for v in values if not np.isnan(v)]
    if present:
        mean = float(np.mean(present))
        ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.3f}")
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(names)), labels=names, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


# -- report -----------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """JSON-safe copy: numpy/torch to lists and numbers, paths to str, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{100 * value:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _is_binary_metrics(value: Any) -> bool:
    return isinstance(value, Mapping) and "per_attribute" in value


def _binary_groups(binary: Mapping[str, Any]) -> dict[str, dict[str, Mapping]]:
    """{group: {variant: metrics}} from the section's "binary" entry (see module docstring)."""
    groups: dict[str, dict[str, Mapping]] = {}
    for key, value in binary.items():
        if _is_binary_metrics(value):
            groups.setdefault("binary", {})[key] = value
        elif isinstance(value, Mapping):
            groups[key] = {k: v for k, v in value.items() if _is_binary_metrics(v)}
    return groups


def _binary_lines(groups: dict[str, dict[str, Mapping]], png: str | None) -> list[str]:
    lines: list[str] = []
    for group, variants in groups.items():
        if not variants:
            continue
        lines += [f"### Binary attributes ({group})", ""]
        names = list(next(iter(variants.values()))["per_attribute"])
        header = ["Attribute"]
        for variant in variants:
            header += [f"Accuracy ({variant})", f"Balanced acc. ({variant})"]
        header += ["Positive rate", "Count"]
        rows = []
        for name in names:
            row: list[Any] = [name]
            for metrics in variants.values():
                entry = metrics["per_attribute"].get(name, {})
                row += [_fmt(entry.get("accuracy")), _fmt(entry.get("balanced_accuracy"))]
            first = next(iter(variants.values()))["per_attribute"][name]
            rows.append(row + [_fmt(first.get("positive_rate"), 3), first.get("count", "–")])
        mean_row: list[Any] = ["**mean**"]
        for metrics in variants.values():
            mean_row += [f"**{_fmt(metrics.get('mean_accuracy'))}**", f"**{_fmt(metrics.get('mean_balanced_accuracy'))}**"]
        rows.append(mean_row + ["", ""])
        lines += _table(header, rows)
        if png and group == "binary":
            lines += [f"![accuracy per attribute]({png})", ""]
    return lines


def _categorical_lines(categorical: Mapping[str, Mapping]) -> list[str]:
    lines: list[str] = []
    for task, metrics in categorical.items():
        lines += [f"### {task}", ""]
        lines += _table(["Accuracy", "Balanced accuracy", "Macro precision", "Count"],
                        [[_fmt(metrics.get("accuracy")), _fmt(metrics.get("balanced_accuracy")),
                          _fmt(metrics.get("macro_precision")), metrics.get("count", "–")]])
        names, matrix = metrics.get("class_names"), metrics.get("confusion_matrix")
        if matrix is not None:
            names = names or [str(i) for i in range(len(matrix))]
            lines += ["Confusion matrix (rows: true, columns: predicted):", ""]
            lines += _table(["true \\ pred", *names], [[names[i], *row] for i, row in enumerate(matrix)])
        if metrics.get("confusion_png"):
            lines += [f"![confusion matrix of {task}]({metrics['confusion_png']})", ""]
    return lines


def _age_lines(age: Mapping[str, Mapping]) -> list[str]:
    if not age:
        return []
    ks = sorted({int(k) for metrics in age.values() for k in metrics.get("cs", {})} - {5})
    header = ["Task", "MAE (years)", "CS(5)", *[f"CS({k})" for k in ks], "Count"]
    rows = [[task, _fmt(m.get("mae"), 3), _fmt(m.get("cs5")), *[_fmt(m.get("cs", {}).get(str(k))) for k in ks],
             m.get("count", "–")] for task, m in age.items()]
    return ["### Age", "", *_table(header, rows)]


def _with_oracle(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry with oracle AURC and E-AURC, derived from count and accuracy when absent."""
    entry = dict(entry)
    if entry.get("oracle_aurc") is None and entry.get("count") and entry.get("accuracy") is not None:
        count = int(entry["count"])
        entry["oracle_aurc"] = oracle_aurc(count, int(round(count * (1 - entry["accuracy"]))))
    if entry.get("e_aurc") is None and entry.get("oracle_aurc") is not None and entry.get("aurc") is not None:
        entry["e_aurc"] = entry["aurc"] - entry["oracle_aurc"]
    return entry


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def compare_aurc(methods: Mapping[str, Mapping[str, Any]]) -> str:
    """One sentence naming the method with the lowest AURC (lower is better), from the numbers."""
    ranked = sorted(((float(m["aurc"]), name) for name, m in methods.items() if _finite(m.get("aurc"))))
    if len(ranked) < 2:
        return "Only one confidence measure with an AURC: nothing to compare."
    (best, winner), others = ranked[0], ranked[1:]
    ties = [name for value, name in others if math.isclose(value, best, rel_tol=1e-9, abs_tol=1e-12)]
    if ties:
        return f"Lowest AURC: tie between `{winner}` and " + ", ".join(f"`{n}`" for n in ties) + f" ({best:.4f})."
    rest = ", ".join(f"`{name}` ({value:.4f}, {value / best:.2f}x)" if best > 0 else f"`{name}` ({value:.4f})"
                     for value, name in others)
    return f"Lowest AURC: **`{winner}`** ({best:.4f}), lower than {rest}."


def _selective_lines(selective: Mapping[str, Mapping]) -> list[str]:
    lines: list[str] = []
    for group, block in selective.items():
        methods = {name: _with_oracle(m) for name, m in block.get("methods", {}).items()}
        if not methods:
            continue
        lines += [f"### Selective prediction ({group})", ""]
        lines += _table(["Method", "AURC", "Oracle AURC", "E-AURC", "Accuracy", "Count"],
                        [[f"`{name}`", _fmt(m.get("aurc")), _fmt(m.get("oracle_aurc")), _fmt(m.get("e_aurc")),
                          _pct(m.get("accuracy")), m.get("count", "–")] for name, m in methods.items()])
        lines += [compare_aurc(methods), ""]
        graded = {name: m["grades"] for name, m in methods.items() if m.get("grades")}
        if graded:
            header = ["Grade", "Confidence"]
            for name in graded:
                header += [f"{name}: images", f"{name}: accuracy", f"{name}: coverage"]
            rows = []
            for g, letter in enumerate(GRADES):
                first = next(iter(graded.values()))[g]
                row: list[Any] = [letter, first.get("range", "")]
                for table in graded.values():
                    entry = table[g]
                    row += [entry.get("count", 0), _pct(entry.get("accuracy")), _pct(entry.get("coverage"))]
                rows.append(row)
            lines += ["Grades (confidence S >= 0.8 > A >= 0.6 > B >= 0.4 > C >= 0.2 > D):", ""]
            lines += _table(header, rows)
        if block.get("curve_png"):
            lines += [f"![risk-coverage of {group}]({block['curve_png']})", ""]
    return lines


def write_evaluation_report(results: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write `results.json` (every number) and `report.md` (tables and plot links) into
    `out_dir`; returns {"json": path, "markdown": path}. Structure: module docstring."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = _jsonable(results)
    json_path, md_path = out / "results.json", out / "report.md"
    atomic_write_text(json_path, json.dumps(clean, indent=2, allow_nan=False) + "\n")

    lines = ["# Attribute evaluation", ""]
    info = [(k, v) for k, v in clean.items() if k not in ("datasets", "files") and not isinstance(v, (dict, list))]
    if info:
        lines += _table(["", "value"], [[k, _fmt(v)] for k, v in info])
    datasets = clean.get("datasets", {})
    summary = []
    for label, section in datasets.items():
        groups = _binary_groups(section.get("binary", {}))
        main_group = groups.get("binary") or next(iter(groups.values()), {})
        main = next(iter(main_group.values()), None)
        summary.append([label, section.get("faces", "–"), _fmt(main.get("mean_accuracy")) if main else "–",
                        ", ".join(f"{t} {_fmt(m.get('accuracy'))}" for t, m in section.get("categorical", {}).items()) or "–",
                        ", ".join(f"{t} {_fmt(m.get('mae'), 2)}" for t, m in section.get("age", {}).items()) or "–"])
    if summary:
        lines += ["## Summary", ""]
        lines += _table(["Dataset", "Faces", "Mean binary accuracy", "Categorical accuracy", "Age MAE"], summary)
    for label, section in datasets.items():
        lines += [f"## {label}", ""]
        if "faces" in section or "head" in section:
            lines += [f"{section.get('faces', '?')} faces" + (f", head `{section['head']}`" if section.get("head") else "") + ".", ""]
        lines += _binary_lines(_binary_groups(section.get("binary", {})), section.get("per_attribute_png"))
        lines += _categorical_lines(section.get("categorical", {}))
        lines += _age_lines(section.get("age", {}))
        lines += _selective_lines(section.get("selective", {}))
        if section.get("gradcam"):
            cam = section["gradcam"]
            lines += ["### Where the head looks (Grad-CAM)", "",
                      f"Layer `{cam['layer']}`, {cam['faces']} test faces. Sanity check (Adebayo et al.): with the head's "
                      f"weights re-drawn at random, the maps' mean Spearman rank correlation with these is "
                      f"{cam['mean_rank_correlation']:.2f} (1 would mean the maps ignore the head; second row of each face).",
                      "", f"![Grad-CAM]({cam['png']})", ""]
    atomic_write_text(md_path, "\n".join(lines).rstrip() + "\n")
    return {"json": json_path, "markdown": md_path}
