"""From cell predictions to the study's numbers: the cross-domain matrix, the Holm-corrected
verdicts of every arm against source-only, and how much of the residual gap each arm closes.

All numbers are JSON-ready. Per task and direction `source->target`:
- `matrix[arm][domain]`: balanced accuracy and accuracy, each the mean over seeds, with the
  standard deviation over seeds and a 95% bootstrap interval that resamples the domain's test
  identities (files where the domain has none), every seed scored on the same resample;
- `majority`: predicting the source's most common training class;
- `verdicts[arm]`: the paired difference to source-only on the target's test split, its
  Holm-corrected interval and p-value, and the verdict "better", "worse" or "no significant
  difference";
- `verdicts_vs_colour[arm]`: the same against colour-match, for the label-free arms that are
  not colour-match itself (a second Holm family: an arm that closes half the residual gap must
  beat both baselines);
- `gap`: the residual gap (oracle minus colour-match balanced accuracy on the target) and, for
  each arm that uses no target labels, the share of it the arm closes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from transfer import stats
from transfer.arms import Recipe
from transfer.config import StudyConfig, arm_base

__all__ = ["analyse", "LABEL_FREE_ARMS", "is_label_free", "sentences"]

# Arms that never see a target label; the oracle (target_only) and joint do.
LABEL_FREE_ARMS = ("sr_mix", "bicubic_mix", "augment_mix", "colour_match", "dann", "adabn", "tent", "self_train",
                   "self_train_sa", "colour_self_train", "colour_self_train_no_adabn", "colour_teacher_self_train",
                   "combined")


def is_label_free(arm: str) -> bool:
    """Whether an arm (AdaBN suffix and all) trains without any target label."""
    return arm_base(arm) in LABEL_FREE_ARMS or arm == "source_only+adabn"


def _groups(identities: list[str | None]) -> np.ndarray | None:
    """Identities as bootstrap groups when every face has one; otherwise resample files."""
    if not identities or any(i is None for i in identities):
        return None
    return np.asarray(identities)


def _test_labels(sets, domain: str, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    faces = sets.get(f"{domain}/test")
    column = faces.schema.names.index(task)
    known = faces.mask[:, column].numpy()
    y = faces.targets[:, column].numpy().round().astype(np.int64)
    return y, known, _groups(faces.identity)


def _test_counts(labels: dict[str, tuple], domains: list[str]) -> dict[str, Any]:
    """What one task is scored on in each domain: labelled test faces, their people and positives.
    A secondary task labelled on a few people has wide intervals, and the report says why."""
    counts: dict[str, Any] = {"test_faces": {}, "test_groups": {}, "test_people": {}, "test_positives": {}}
    for d in domains:
        y, known, groups = labels[d]
        counts["test_faces"][d] = int(known.sum())
        counts["test_groups"][d] = "identities" if groups is not None else "files"
        counts["test_people"][d] = int(len(np.unique(groups[known]))) if groups is not None else None
        counts["test_positives"][d] = int((y[known] == 1).sum())
    return counts


def analyse(config: StudyConfig, directions: list[tuple[str, str]], recipes: dict[tuple[str, str, str], Recipe],
            assignment: dict[tuple[str, str, str], list[str]], outputs: dict[str, dict[str, Any]], sets) -> dict[str, Any]:
    st = config.stats
    domains = list(config.domains)
    results: dict[str, Any] = {"tasks": {}, "domains": {}}
    for domain in domains:
        splits = sets.domain_splits(domain)
        results["domains"][domain] = {
            "source": config.domains[domain].source, "root": config.domains[domain].root,
            "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
            "test_people": len(splits.test.identities()), "detection_failures": sets.skipped(domain),
        }
    for task in config.tasks:
        labels = {d: _test_labels(sets, d, task) for d in domains}
        per_direction = {}
        for source, target in directions:
            train_faces = sets.get(f"{source}/train")
            column = train_faces.schema.names.index(task)
            train_known = train_faces.mask[:, column].numpy()
            train_y = train_faces.targets[:, column].numpy().round().astype(np.int64)[train_known]
            matrix: dict[str, dict[str, Any]] = {}
            seed_preds: dict[str, dict[str, list[np.ndarray]]] = {}
            for arm in config.arms:
                fingerprints = assignment[(source, target, arm)]
                matrix[arm] = {}
                seed_preds[arm] = {}
                for domain in domains:
                    y, known, groups = labels[domain]
                    preds = [outputs[f]["arrays"][f"{domain}::{task}::pred"][known] for f in fingerprints]
                    seed_preds[arm][domain] = preds
                    g = groups[known] if groups is not None else None
                    # A secondary task may have no labelled test face in a domain: nothing to score.
                    matrix[arm][domain] = _cell_metrics(y[known], preds, g, st) if known.any() else None
            majority = {}
            for domain in domains:
                y, known, _ = labels[domain]
                majority[domain] = stats.majority_baseline(train_y, y[known]) if known.any() and len(train_y) else None
            y_t, known_t, groups_t = labels[target]
            g_t = groups_t[known_t] if groups_t is not None else None
            scorable = bool(known_t.any())
            paired = {} if not scorable else {
                arm: stats.paired_bootstrap(y_t[known_t], seed_preds[arm][target], seed_preds["source_only"][target],
                                            groups=g_t, n_boot=st.n_boot, level=st.level, seed=st.seed)
                for arm in config.arms if arm != "source_only"
            }
            verdicts = stats.verdicts(paired, alpha=st.alpha) if paired else {}
            against_colour = [arm for arm in config.arms if is_label_free(arm) and arm != "colour_match"]
            verdicts_vs_colour = {}
            if scorable and "colour_match" in config.arms and against_colour:
                versus = {arm: stats.paired_bootstrap(y_t[known_t], seed_preds[arm][target], seed_preds["colour_match"][target],
                                                      groups=g_t, n_boot=st.n_boot, level=st.level, seed=st.seed)
                          for arm in against_colour}
                verdicts_vs_colour = _holm_entries(versus, stats.verdicts(versus, alpha=st.alpha))
            if not scorable:
                per_direction[f"{source}->{target}"] = {
                    "source": source, "target": target, "matrix": matrix, "majority": majority, "verdicts": {},
                    "gap": {"note": f"no labelled {task} faces in {target}'s test split"}, **_test_counts(labels, domains),
                }
                continue
            verdicts = _holm_entries(paired, verdicts)
            per_direction[f"{source}->{target}"] = {
                "source": source, "target": target, "matrix": matrix, "majority": majority,
                "verdicts": verdicts, "verdicts_vs_colour": verdicts_vs_colour, "gap": _gap(matrix, target, config.arms),
                **_test_counts(labels, domains),
            }
        results["tasks"][task] = per_direction
    return results


def _holm_entries(paired: dict[str, Any], verdicts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Holm's own interval (at its per-comparison level) decides; the plain 95% one is shown beside it."""
    for arm, result in paired.items():
        entry = verdicts[arm]
        entry["holm_low"], entry["holm_high"], entry["holm_level"] = entry.pop("low"), entry.pop("high"), entry.pop("level")
        entry.update(result.to_dict())
    return verdicts


def _cell_metrics(y: np.ndarray, preds: list[np.ndarray], groups, st) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": len(preds), "faces": int(len(y))}
    for metric in ("balanced_accuracy", "accuracy"):
        per_seed = [getattr(stats, metric)(y, p) for p in preds]
        interval = stats.bootstrap_ci(y, preds, groups=groups, metric=metric, n_boot=st.n_boot, level=st.level, seed=st.seed)
        out[metric] = {"mean": float(np.mean(per_seed)), "sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
                       "low": interval.low, "high": interval.high, "per_seed": [float(v) for v in per_seed]}
    return out


def _gap(matrix: dict[str, dict[str, Any]], target: str, arms: list[str]) -> dict[str, Any]:
    """The residual gap on the target and the share of it each label-free arm closes."""
    def ba(arm: str) -> float | None:
        return matrix[arm][target]["balanced_accuracy"]["mean"] if arm in matrix and matrix[arm][target] else None

    oracle, colour, source = ba("target_only"), ba("colour_match"), ba("source_only")
    result: dict[str, Any] = {"oracle": oracle, "colour_match": colour, "source_only": source}
    if oracle is None or colour is None:
        result["note"] = "needs the target_only and colour_match arms"
        return result
    residual = oracle - colour
    result["residual_gap"] = residual
    result["colour_gain"] = colour - source
    result["closed"] = {}
    for arm in arms:
        if is_label_free(arm) and arm != "colour_match":
            # A share of a gap that is not there (colour-match at or above the oracle) means nothing.
            result["closed"][arm] = (ba(arm) - colour) / residual if residual > 1e-9 else None
    # source-only's own share: when colour-matching costs accuracy it is above 0, and an arm's share
    # says nothing about a gain over source-only unless it exceeds this one
    result["source_only_share"] = (source - colour) / residual if residual > 1e-9 and source is not None else None
    return result


def sentences(direction: dict[str, Any], task: str) -> list[str]:
    """The report's words for one task and direction, generated from its numbers only."""
    source, target = direction["source"], direction["target"]
    out = []
    m = direction["matrix"]
    if m["source_only"][target] is None:
        return [f"{task}, {source} -> {target}: {target}'s test split has no labelled {task} face; nothing to compare."]
    if "target_only" in m:
        drop = m["target_only"][target]["balanced_accuracy"]["mean"] - m["source_only"][target]["balanced_accuracy"]["mean"]
        text = (f"{task}, {source} -> {target}: trained on {source} alone, balanced accuracy on {target} is "
                f"{100 * m['source_only'][target]['balanced_accuracy']['mean']:.1f}%, "
                f"{100 * abs(drop):.1f} points {'below' if drop > 0 else 'above'} the oracle trained on {target}'s own labels.")
        if drop <= 0:
            text += " The oracle is no better here, so this test split shows no domain drop to close."
        out.append(text)
    better = [a for a, v in direction["verdicts"].items() if v["verdict"] == "better"]
    worse = [a for a, v in direction["verdicts"].items() if v["verdict"] == "worse"]
    neutral = [a for a, v in direction["verdicts"].items() if v["verdict"] == "no significant difference"]
    rule = "(paired bootstrap over test people, 95% intervals after a Holm correction across the arms)"
    if better:
        out.append(f"Beat source-only on {target} {rule}: {', '.join(better)}.")
    else:
        out.append(f"No arm beat source-only on {target} {rule}.")
    if worse:
        out.append(f"Worse than source-only: {', '.join(worse)}.")
    if neutral:
        out.append(f"No significant difference from source-only: {', '.join(neutral)}.")
    gap = direction["gap"]
    if "residual_gap" in gap and gap["residual_gap"] <= 1e-9:
        out.append(f"Colour alone (colour-match minus source-only) moves balanced accuracy by {100 * gap['colour_gain']:+.1f} "
                   f"points, which already reaches the oracle ({100 * -gap['residual_gap']:.1f} points above it): no "
                   "residual gap is left for another arm to close.")
    elif "residual_gap" in gap:
        out.append(f"Colour alone (colour-match minus source-only) moves balanced accuracy by {100 * gap['colour_gain']:+.1f} "
                   f"points; the residual gap to the oracle after colour-matching is {100 * gap['residual_gap']:.1f} points.")
        if gap.get("source_only_share") is not None and gap["colour_gain"] < 0:
            out.append(f"Colour-matching costs accuracy here, so the residual gap is measured from below source-only, "
                       f"which itself sits at {100 * gap['source_only_share']:.0f}% of it: an arm's share shows a gain "
                       "only where it exceeds that.")
        halves = [a for a, c in gap["closed"].items() if c is not None and c >= 0.5]
        if halves:
            # A point estimate is not a finding: say which of them the comparison rule supports.
            supported = [a for a in halves if direction["verdicts"].get(a, {}).get("verdict") == "better"]
            unsupported = [a for a in halves if a not in supported]
            text = f"By point estimate, closing at least half of the residual gap without target labels: {', '.join(halves)}."
            if unsupported:
                text += (f" Of these, {', '.join(unsupported)} {'does' if len(unsupported) == 1 else 'do'} not beat "
                         "source-only by the rule above, so the data do not support a gain for "
                         f"{'it' if len(unsupported) == 1 else 'them'}.")
            versus = direction.get("verdicts_vs_colour") or {}
            both = [a for a in supported if versus.get(a, {}).get("verdict") == "better"]
            if versus and supported:
                text += (f" Beating colour-match as well (its own Holm family): {', '.join(both)}." if both else
                         " None of them also beats colour-match by the same rule.")
            out.append(text)
        else:
            out.append("No arm without target labels closes half of the residual gap.")
    if m["source_only"][target].get("seeds", 0) == 1:
        out.append("One seed: the intervals cover the sampling of test people, not the variation between training runs, "
                   "which can be larger; run several seeds before drawing conclusions.")
    return out
