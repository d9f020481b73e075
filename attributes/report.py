"""Plots and the Markdown/JSON evaluation report of `facegan attributes eval`.

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
          "recognized": recognized_summary(...),                  # SA-softmax groups only
          "against_plain": {"top1": paired_bootstrap(...), "aurc_<method>": ...},  # with --compare
      }},
    }

(`selective_summary` builds one "methods" entry.) Method names used by `attributes.evaluate`:
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

from attributes.metrics import oracle_aurc
from attributes.sa_softmax import GRADES
from engine.checkpoint import atomic_write_bytes, atomic_write_text
from engine.config import plain_data

__all__ = ["plot_risk_coverage", "plot_confusion_matrix", "plot_per_attribute", "compare_aurc", "write_evaluation_report"]


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
        coverage, risk = np.asarray(coverage, dtype=np.float64), np.asarray(risk, dtype=np.float64)
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
    counts = np.asarray(matrix, dtype=np.float64)
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
        recognized = block.get("recognized")
        if recognized:
            lines += [f"SA-softmax as the thesis reports it: top-1 {_pct(recognized.get('accuracy'))} over all "
                      f"{recognized.get('count')} predictions, {_pct(recognized.get('accuracy_recognized'))} over the "
                      f"{recognized.get('recognized')} not called unrecognizable ({recognized.get('unrecognizable')} "
                      "called unrecognizable: the N+1-th output the largest).", ""]
        against = block.get("against_plain")
        if against:
            top1 = against["top1"]
            lines += [f"Against the plain-softmax model (`--compare`), on the same {top1['predictions']} predictions, "
                      f"with {100 * top1['level']:.0f}% bootstrap intervals over {top1['groups']} people (or files):", ""]
            rows = [["top-1, this model minus the plain one", f"{100 * top1['value']:+.2f} points",
                     f"[{100 * top1['low']:+.2f}, {100 * top1['high']:+.2f}]", _fmt(top1["p_two_sided"])]]
            rows += [[f"AURC of `{name[len('aurc_'):]}` minus the plain model's max-softmax", f"{d['value']:+.4f}",
                      f"[{d['low']:+.4f}, {d['high']:+.4f}]", _fmt(d["p_two_sided"])]
                     for name, d in against.items() if name.startswith("aurc_")]
            lines += _table(["Difference", "Value", "Interval", "p (two-sided)"], rows)
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
    clean = plain_data(results, non_finite_as_none=True)
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
