"""Evaluating a trained attribute model on held-out faces (`facegan attributes eval`): Markdown,
JSON and PNG plots.

For every dataset head it reports per-attribute accuracy and balanced accuracy (at 0.5 and at
the thresholds calibrated on the validation people), their means, categorical accuracy with
confusion matrices, age MAE and CS(5). For selective prediction it grades every prediction
S..D and draws risk-coverage curves with their AURC for each available confidence:
- "sa_softmax": 1 - p(unrecognizable) of an SA-softmax head;
- "max_softmax": the largest class probability of the same model (Feng et al., ICLR 2023,
  find it a strong baseline);
- "plain_softmax_model": max-softmax of a separately trained plain-softmax model (`--compare`).
Binary attributes are pooled: each (image, attribute) pair is one prediction.

The data default to the datasets the model was trained on, read and split exactly as in
training (same sources, split seeds and aligned caches); `--dataset NAME=ROOT --head HEAD`
evaluates a head on another dataset instead (cross-domain), matching tasks by name.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attributes.data import open_split
from data_prep.selection import evenly_spaced
from engine.deprecation import moved_names
from engine.errors import FaceganError

__all__ = ["evaluate_checkpoint", "headline_accuracy"]

# facegan 0.1 had the metrics, plots and report here (this module was then `attributes.evaluation`).
__getattr__ = moved_names(__name__, {
    **{name: "attributes.metrics" for name in ("binary_attribute_metrics", "categorical_metrics", "age_metrics",
                                               "risk_coverage", "aurc", "oracle_aurc", "selective_summary", "grade_table")},
    **{name: "attributes.report" for name in ("plot_risk_coverage", "plot_confusion_matrix", "plot_per_attribute",
                                              "compare_aurc", "write_evaluation_report")},
})

log = logging.getLogger(__name__)


def _columns_for(group, schema) -> list[int | None]:
    names = schema.names
    return [names.index(t.name) if t.name in names else None for t in group.tasks]


def _targets(cache, columns: list[int | None]) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(cache)
    targets = torch.zeros(n, len(columns))
    mask = torch.zeros(n, len(columns), dtype=torch.bool)
    all_t, all_m = cache.targets, cache.mask
    for k, column in enumerate(columns):
        if column is not None:
            targets[:, k], mask[:, k] = all_t[:, column], all_m[:, column]
    return targets, mask


def _selective(methods_in: dict[str, tuple[np.ndarray, np.ndarray]], out_dir: Path, stem: str, title: str) -> dict:
    """Risk-coverage, AURC and grades of each method: name -> (confidence, correct)."""
    from attributes.metrics import risk_coverage, selective_summary
    from attributes.report import plot_risk_coverage

    curves, methods = {}, {}
    for method, (confidence, correct) in methods_in.items():
        curves[method] = risk_coverage(confidence, correct)
        methods[method] = selective_summary(confidence, correct)
    png = out_dir / f"risk_coverage_{stem}.png"
    plot_risk_coverage(curves, png, title)
    return {"methods": methods, "curve_png": png.name}


def _against_plain(methods: dict[str, tuple[np.ndarray, np.ndarray]], groups: np.ndarray, n_boot: int) -> dict:
    """The model against the separately trained plain-softmax one (`--compare`), on the same
    predictions, with bootstrap intervals over `groups` (people, or files where a dataset has no
    identities): its top-1 minus the plain model's, and each of its confidences' AURC minus the
    plain model's max-softmax AURC (below 0: it ranks its errors better)."""
    from attributes.metrics import aurc, paired_bootstrap

    plain_confidence, plain_correct = methods["plain_softmax_model"]
    correct = methods["max_softmax"][1]  # every method of this model shares its predictions
    paired = {"top1": paired_bootstrap(lambda i: float(correct[i].mean() - plain_correct[i].mean()), groups, n_boot)}
    for name, (confidence, right) in methods.items():
        if name != "plain_softmax_model":
            paired[f"aurc_{name}"] = paired_bootstrap(
                lambda i, c=confidence, r=right: aurc(c[i], r[i]) - aurc(plain_confidence[i], plain_correct[i]), groups, n_boot)
    return paired


def _add_comparisons(block: dict, methods: dict[str, tuple[np.ndarray, np.ndarray]], bootstrap: int,
                     groups: np.ndarray | None) -> None:
    """Into a group's selective block: an SA head's thesis view ("recognized"), and with a plain
    model to compare and the bootstrap unit of each prediction (`groups`), "against_plain"."""
    from attributes.metrics import recognized_summary

    if groups is not None and "plain_softmax_model" in methods:
        block["against_plain"] = _against_plain(methods, groups, bootstrap)
    if "sa_softmax" in methods:
        confidence, correct = methods["sa_softmax"]
        block["recognized"] = recognized_summary(confidence, methods["max_softmax"][0], correct)


def _gradcam_section(model, cache, head: str, count: int, tasks: list[str] | None, png: Path) -> dict[str, Any]:
    """Grad-CAM overlays of `count` faces spread over the split, with the randomised-head check."""
    from attributes.explain import explain_faces, save_overlays, targets_for

    rows = np.asarray(evenly_spaced(len(cache), count), dtype=int)
    faces = cache.get_batch(rows)
    explained = explain_faces(model, faces, head, targets_for(model, head, tasks))
    save_overlays(png, faces, explained, [f"test face {r}" for r in rows])
    correlations = [c for values in explained["rank_correlation"].values() for c in values]
    return {"png": png.name, "faces": len(rows), "layer": getattr(model.trunk, "cam_layer", "trunk"),
            "tasks": list(explained["maps"]), "mean_rank_correlation": float(np.mean(correlations))}


def evaluate_checkpoint(checkpoint: str | Path, out_dir: str | Path, split: str = "test", compare: str | Path | None = None,
                        dataset: str | None = None, head: str | None = None, device: str = "cpu", batch_size: int = 256,
                        use_ema: bool = True, work_dir: str | Path | None = None, explain: int = 0,
                        explain_tasks: list[str] | None = None, bf16: bool = False, bootstrap: int = 1000) -> dict[str, Any]:
    from attributes.config import ALL_FACES, DatasetEntry
    from attributes.inference import calibrated_thresholds, load_attribute_model, predict_cache, single_network
    from attributes.metrics import age_metrics, binary_attribute_metrics, categorical_metrics
    from attributes.model import AttributeEnsemble
    from attributes.report import plot_confusion_matrix, plot_per_attribute, write_evaluation_report
    from data_prep.datasets.schema import TaskKind

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_attribute_model(checkpoint, use_ema=use_ema, device=device)
    model = single_network(loaded, "--explain (Grad-CAM)") if explain > 0 else loaded.model
    baseline = load_attribute_model(compare, use_ema=use_ema, device=device) if compare else None
    work = Path(work_dir) if work_dir else Path(checkpoint).resolve().parent.parent
    if dataset:
        name, _, root = dataset.partition("=")
        head = head or list(model.groups)[0]
        if head not in model.groups:
            raise FaceganError(f"no head {head!r} in {checkpoint}; it has {list(model.groups)}")
        known = loaded.config.datasets.get(head)
        entry = DatasetEntry(source=name, root=root, template=known.template if known else "thesis",
                             age_groups=list(known.age_groups) if known else [])
        plan = {f"{name} (head {head})": (head, entry)}
    else:
        plan = {name: (name, entry) for name, entry in loaded.config.datasets.items()}
        for name, (_, entry) in plan.items():
            if entry.train_split == ALL_FACES:
                raise FaceganError(f"{checkpoint} was trained on every face of {name} (train_split: all), so none of "
                                   f"them is held out; evaluate it on other faces: --dataset {entry.source}=ROOT --head {name}")
    flip_tta = loaded.config.eval.flip_tta
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint), "step": loaded.step, "split": split, "weights": "ema" if use_ema else "raw",
        "flip_tta": flip_tta, "compare": str(compare) if compare else None,
        "members": len(model.members) if isinstance(model, AttributeEnsemble) else 1,
        "precision": "bfloat16" if loaded.fast(bf16).dtype is not None else "float32", "datasets": {},
    }
    for label, (head_name, entry) in plan.items():
        cache = open_split(entry, model.input_size, split, work)
        if len(cache) == 0:
            log.warning("%s: no faces in split %r; skipped", label, split)
            continue
        schema = cache.schema
        predictions = predict_cache(loaded.fast(bf16), cache, head_name, batch_size, device, flip_tta)
        base_predictions = None
        if baseline is not None and head_name in baseline.model.groups:
            base_predictions = predict_cache(baseline.fast(bf16), cache, head_name, batch_size, device,
                                             baseline.config.eval.flip_tta)
        section: dict[str, Any] = {"faces": len(cache), "head": head_name, "categorical": {}, "age": {}, "selective": {}}
        faces_of = None
        if base_predictions is not None and bootstrap > 0:
            # the unit a bootstrap resamples: a person, or a file where the dataset names nobody
            faces_of = np.asarray([str(r.identity) if r.identity is not None else str(r.path) for r in cache.records])
        stem = label.split(" ")[0]
        for group in model.groups[head_name]:
            columns = _columns_for(group, schema)
            if all(c is None for c in columns):
                continue
            targets, mask = _targets(cache, columns)
            decoded = predictions[group.name]
            names = [t.name for t in group.tasks]
            if group.kind is TaskKind.BINARY:
                keep = [k for k, c in enumerate(columns) if c is not None]
                prob, t, m = decoded["prob"][:, keep], targets[:, keep], mask[:, keep]
                kept_names = [names[k] for k in keep]
                binary = {"threshold_0.5": binary_attribute_metrics(prob, t, m, kept_names)}
                thresholds = calibrated_thresholds(loaded.thresholds, head_name, group)
                if thresholds is not None:
                    binary["calibrated"] = binary_attribute_metrics(prob, t, m, kept_names, threshold=thresholds[keep])
                section.setdefault("binary", {}).update({group.name: binary} if group.name != "binary" else binary)
                if group.name == "binary":
                    per_attribute = binary["threshold_0.5"]["per_attribute"]
                    png = out_dir / f"per_attribute_{stem}.png"
                    plot_per_attribute({k: v["accuracy"] for k, v in per_attribute.items()}, png)
                    section["per_attribute_png"] = png.name
                pred = (prob >= 0.5)
                correct = (pred == t.bool())[m].numpy()
                methods = {"max_softmax": (decoded["max_softmax"][:, keep][m].numpy(), correct)}
                if group.sa:
                    methods = {"sa_softmax": (decoded["confidence"][:, keep][m].numpy(), correct), **methods}
                if base_predictions is not None and group.name in base_predictions:
                    base = base_predictions[group.name]
                    base_correct = ((base["prob"][:, keep] >= 0.5) == t.bool())[m].numpy()
                    methods["plain_softmax_model"] = (base["max_softmax"][:, keep][m].numpy(), base_correct)
                section["selective"][group.name] = _selective(methods, out_dir, f"{stem}_{group.name}", f"{label}: {group.name}")
                _add_comparisons(section["selective"][group.name], methods, bootstrap,
                                 None if faces_of is None else np.broadcast_to(faces_of[:, None], m.shape)[m.numpy()])
            elif group.kind is TaskKind.REGRESSION:
                valid = mask[:, 0]
                section["age"][group.name] = age_metrics(decoded["value"][valid], targets[valid, 0])
            else:
                valid = mask[:, 0]
                task = group.tasks[0]
                metrics = categorical_metrics(decoded["probs"][valid], targets[valid, 0].long(), list(task.classes))
                png = out_dir / f"confusion_{stem}_{group.name}.png"
                plot_confusion_matrix(metrics["confusion_matrix"], list(task.classes), png, f"{label}: {task.name}")
                metrics["confusion_png"] = png.name
                section["categorical"][group.name] = metrics
                correct = (decoded["pred"][valid] == targets[valid, 0].long()).numpy()
                methods = {"max_softmax": (decoded["max_softmax"][valid].numpy(), correct)}
                if group.sa:
                    methods = {"sa_softmax": (decoded["confidence"][valid].numpy(), correct), **methods}
                if base_predictions is not None and group.name in base_predictions:
                    base = base_predictions[group.name]
                    base_correct = (base["pred"][valid] == targets[valid, 0].long()).numpy()
                    methods["plain_softmax_model"] = (base["max_softmax"][valid].numpy(), base_correct)
                section["selective"][group.name] = _selective(methods, out_dir, f"{stem}_{group.name}", f"{label}: {task.name}")
                _add_comparisons(section["selective"][group.name], methods, bootstrap,
                                 None if faces_of is None else faces_of[valid.numpy()])
        if explain > 0:
            section["gradcam"] = _gradcam_section(model, cache, head_name, explain, explain_tasks, out_dir / f"gradcam_{stem}.png")
        results["datasets"][label] = section
    if not results["datasets"]:
        raise FaceganError(f"nothing to evaluate: no faces in split {split!r} of any dataset")
    results["files"] = {k: str(v) for k, v in write_evaluation_report(results, out_dir).items()}
    return results


def headline_accuracy(results: dict) -> dict[str, float]:
    """The headline accuracy of each evaluated dataset: mean binary accuracy at 0.5, else the
    mean of its categorical accuracies."""
    summary = {}
    for label, section in results["datasets"].items():
        binary = section.get("binary", {}).get("threshold_0.5")
        if binary:
            summary[label] = float(binary["mean_accuracy"])
        elif section.get("categorical"):
            values = [float(m["accuracy"]) for m in section["categorical"].values()]
            summary[label] = sum(values) / len(values)
    return summary
