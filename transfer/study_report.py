"""The study's report: report.html, results.md and results.json in the run folder, images beside
them (relative paths, so the folder can be zipped and opened anywhere)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.checkpoint import atomic_write_text
from engine.config import to_dict
from transfer.analysis import sentences
from transfer.config import ADABN_SUFFIX, StudyConfig, arm_base
from transfer.report import Report

__all__ = ["write_study_report", "format_interval", "arm_title"]

ARM_TITLES = {
    "source_only": "source only", "target_only": "target only (oracle)", "sr_mix": "SR-mix", "bicubic_mix": "bicubic-mix",
    "augment_mix": "augment-mix", "colour_match": "colour-match", "dann": "DANN", "joint": "joint (both labels)",
    "adabn": "AdaBN", "tent": "TENT", "self_train": "self-training",
    "self_train_sa": "self-training on SA grades", "colour_self_train": "colour-match + self-training + AdaBN",
    "colour_self_train_no_adabn": "colour-match + self-training",
    "colour_teacher_self_train": "colour-matched teacher, self-training in target colours",
    "combined": "colour-match + SR-mix + self-training + AdaBN",
}


def arm_title(arm: str) -> str:
    title = ARM_TITLES.get(arm_base(arm), arm_base(arm))
    return f"{title} + AdaBN" if arm.endswith(ADABN_SUFFIX) else title


def format_interval(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "n/a (no labelled test faces)"
    text = f"{100 * entry['mean']:.1f} [{100 * entry['low']:.1f}, {100 * entry['high']:.1f}]"
    if entry.get("per_seed") and len(entry["per_seed"]) > 1:
        text += f" ±{100 * entry['sd']:.1f}"
    return text


def _bar_chart(direction: dict[str, Any], task: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = direction["target"]
    arms = list(direction["matrix"])
    means = [100 * direction["matrix"][a][target]["balanced_accuracy"]["mean"] for a in arms]
    lows = [100 * direction["matrix"][a][target]["balanced_accuracy"]["low"] for a in arms]
    highs = [100 * direction["matrix"][a][target]["balanced_accuracy"]["high"] for a in arms]
    colours = []
    for arm in arms:
        verdict = direction["verdicts"].get(arm, {}).get("verdict")
        colours.append({"better": "#2a9d4b", "worse": "#c0392b"}.get(verdict, "#7f8c8d" if arm != "source_only" else "#34495e"))
    titles = [arm_title(a) for a in arms]
    # Room below the axes for the slanted arm names, so that long names do not squash the bars.
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(arms) + 1.5), 2.6 + 0.045 * max(len(t) for t in titles)))
    x = np.arange(len(arms))
    ax.bar(x, means, color=colours, yerr=[np.subtract(means, lows), np.subtract(highs, means)], capsize=4)
    majority = 100 * direction["majority"][target]["balanced_accuracy"]
    # The axis starts near the lowest bar so that arms a few points apart stay distinguishable; a
    # majority line below it is named in the legend rather than stretching the axis down to it.
    bottom = max(0.0, min(lows) - 10)
    where = ", below the axis" if majority < bottom else ""
    ax.axhline(majority, color="k", linestyle=":", linewidth=1, label=f"majority class ({majority:.0f}{where})")
    ax.set_xticks(x)
    ax.set_xticklabels(titles, rotation=30, ha="right")
    ax.set_ylabel("balanced accuracy (%)")
    ax.set_ylim(bottom, min(100.0, max(highs) + 5))
    ax.set_title(f"{task}: {direction['source']} -> {target} (green: beats source-only after Holm)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pseudo_label_chart(pseudo: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    index = 0
    for name, arms in pseudo.items():
        for arm, seeds in arms.items():
            colour = colours[index % len(colours)]
            index += 1
            for n, seed in enumerate(seeds):
                steps = [r["step"] for r in seed["rounds"]]
                for task in seed["rounds"][0]["tasks"] if seed["rounds"] else []:
                    kept = [100 * r["tasks"][task]["kept"] / max(1, r["tasks"][task]["of"]) for r in seed["rounds"]]
                    accuracy = [100 * r["tasks"][task]["accuracy"] if r["tasks"][task]["accuracy"] is not None else np.nan
                                for r in seed["rounds"]]
                    label = f"{name} {arm_title(arm)} {task}" if n == 0 else None
                    ax.plot(steps, kept, "-o", color=colour, label=label, markersize=3)
                    ax.plot(steps, accuracy, "--o", color=colour, markersize=3)
    ax.set_xlabel("step of the self-training phase")
    ax.set_ylabel("%")
    ax.set_ylim(0, 101)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sr_strips(config: StudyConfig, results: dict[str, Any], sets, out_dir: Path) -> list[tuple[Path, str]]:
    """Per direction with an SR model: source | bicubic | SR | a target face, a few rows."""
    from engine.logging import save_image_grid

    made = []
    for name, direction in next(iter(results["tasks"].values()), {}).items():
        source, target = direction["source"], direction["target"]
        if target not in sets.sr_checkpoints:
            continue
        original = sets.get(f"{source}/train")
        sr = sets.get(f"{source}/train|sr:{target}")
        bicubic = sets.get(f"{source}/train|bicubic:{target}")
        target_faces = sets.get(f"{target}/train")
        count = min(config.strips, len(original), len(target_faces))
        rows = np.linspace(0, len(original) - 1, count).round().astype(int)
        target_rows = np.linspace(0, len(target_faces) - 1, count).round().astype(int)
        tiles = []
        for r, t in zip(rows, target_rows):
            tiles += [original.get_batch([r]), bicubic.get_batch([r]), sr.get_batch([r]), target_faces.get_batch([t])]
        grid = torch.cat(tiles).float() / 127.5 - 1
        path = save_image_grid(grid, out_dir / "figures" / f"sr_strips_{source}_to_{target}.png", nrow=4)
        made.append((path, f"{source} -> {target}: each row is a {source} training face | the same face degraded and "
                           f"bicubic-upsampled | degraded and super-resolved by the SR model trained on {target}'s train "
                           f"split | a {target} face, for comparison"))
    return made


def gap_sentence(gaps: dict[str, Any]) -> str:
    """Whether the SR copies came closer to the target than the originals and the bicubic copies."""
    parts = []
    for direction, sets in gaps["values"].items():
        source, target = direction.split("->")
        by = {("sr" if "SR by" in k else "bicubic" if "bicubic" in k else "floor" if "same domain" in k else "source"): v
              for k, v in sets.items()}
        for space, key in (("trunk", "fd_trunk"), ("FD-face", "fd_face")):
            if by["sr"][key] is None:
                continue
            closer = by["sr"][key] < min(by["source"][key], by["bicubic"][key])
            parts.append(f"{direction}, {space}: the SR copies are {'closer to' if closer else 'not closer to'} {target} "
                         f"than the original and bicubic {source} faces ({by['sr'][key]:.3g} vs {by['source'][key]:.3g} and "
                         f"{by['bicubic'][key]:.3g}; same-domain floor {by['floor'][key]:.3g}).")
    return " ".join(parts)


def _scored_on(direction: dict[str, Any], task: str) -> str:
    """The labelled test faces behind a task's columns (older results lack the people and positives)."""
    parts = []
    for domain, faces in direction.get("test_faces", {}).items():
        people = direction.get("test_people", {}).get(domain)
        positives = direction.get("test_positives", {}).get(domain)
        text = f"{domain} {faces} faces"
        if people is not None:
            text += f" of {people} people"
        if positives is not None:
            text += f", {positives} of them positive"
        parts.append(text)
    return f"Scored on the test faces labelled for {task}: " + "; ".join(parts) + "."


def write_study_report(config: StudyConfig, results: dict[str, Any], sets, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    report = Report(f"Cross-domain study: {config.name}", out_dir)
    budget = config.budget
    report.heading("How the numbers were obtained")
    report.text(
        f"Every domain's faces were aligned by the MTCNN aligner (template '{next(iter(config.domains.values())).template}') "
        f"to {config.model.trunk.input_size} px and split by identity (files where a dataset has no identities). Every arm "
        f"trains the same {config.model.trunk.name} trunk (width {config.model.trunk.width}) for {budget.steps} optimiser "
        f"steps on {budget.batch_size} labelled faces per step (joint: half from each domain; DANN adds as many unlabelled "
        f"target faces), AdamW lr {config.optim.lr}, with seeds {config.seeds}; the EMA weights (decay {budget.ema_decay}) "
        f"are tested with a flip average and the decision threshold 0.5. Cells show balanced accuracy in % as mean over "
        f"seeds [{100 * config.stats.level:.0f}% bootstrap interval over test identities, {config.stats.n_boot} resamples] "
        f"± sd over seeds. An arm beats source-only when the {100 * config.stats.level:.0f}% interval of the paired "
        f"difference (same resamples for both, averaged over seeds) excludes 0 after a Holm correction across the arms "
        f"(family-wise alpha {config.stats.alpha}). Whatever sees target faces without labels (the SR model, DANN, the "
        f"colour statistics, the adapting arms) sees only the target's train split. The adapting arms take their "
        f"optimiser steps out of the same budget: TENT trains on the source for {budget.steps - config.options.adapt.tent_steps} "
        f"steps, then minimises the prediction entropy on target faces for {config.options.adapt.tent_steps} steps "
        f"(BatchNorm scales and shifts only); self-training trains on the source for "
        f"{100 * (1 - config.options.adapt.self_train_fraction):.0f}% of the steps, then on the source labels plus "
        f"pseudo-labelled target faces (added on top of the {budget.batch_size} labelled ones); AdaBN re-estimates "
        "the BatchNorm statistics on the target's train faces and takes no optimiser step.")
    def split_rule(domain: str, info: dict) -> str:
        entry = config.domains[domain]
        if not entry.test_fraction:
            return "the dataset's own split"
        unit = "people" if info["test_people"] else (
            "files (no identities" + ("; byte-identical duplicates dropped first" if entry.dedupe
                                      else "") + ")")
        return (f"{unit}: {100 * entry.test_fraction:.0f}% test, "
                f"{100 * entry.val_fraction:.0f}% val, seed {entry.split_seed}")

    rows = [[d, info["source"], split_rule(d, info), info["train"], info["val"], info["test"], info["test_people"],
             info["detection_failures"]] for d, info in results["domains"].items()]
    report.table(["domain", "dataset", "split by", "train faces", "val faces", "test faces", "test people",
                  "left out by the aligner"],
                 rows, caption="Domains (faces the aligner could not use are counted, not silently dropped)")

    figures = out_dir / "figures"
    for task, per_direction in results["tasks"].items():
        for name, direction in per_direction.items():
            source, target = direction["source"], direction["target"]
            domains = list(direction["matrix"][next(iter(direction["matrix"]))])
            report.heading(f"{task}: {source} -> {target}")
            for line in sentences(direction, task):
                report.text(line)
            report.text(_scored_on(direction, task))
            header = ["trained as"] + [f"{d} test{' (target)' if d == target else ' (source)' if d == source else ''}"
                                       for d in domains]
            def metric(arm: str, domain: str, name: str) -> str:
                entry = direction["matrix"][arm][domain]
                return format_interval(entry[name] if entry else None)

            def majority(domain: str, name: str) -> str:
                entry = direction["majority"][domain]
                return "n/a" if entry is None else f"{100 * entry[name]:.1f}"

            table = [[arm_title(arm)] + [metric(arm, d, "balanced_accuracy") for d in domains]
                     for arm in direction["matrix"]]
            table.append(["majority class of the source"] + [majority(d, "balanced_accuracy") for d in domains])
            report.table(header, table, caption=f"Balanced accuracy (%), {task}")
            accuracy = [[arm_title(arm)] + [metric(arm, d, "accuracy") for d in domains] for arm in direction["matrix"]]
            accuracy.append(["majority class of the source"] + [majority(d, "accuracy") for d in domains])
            report.table(header, accuracy, caption=f"Plain accuracy (%), {task}")
            verdict_rows = []
            for arm, v in direction["verdicts"].items():
                verdict_rows.append([arm_title(arm), f"{100 * v['difference']:+.1f}",
                                     f"[{100 * v['holm_low']:+.1f}, {100 * v['holm_high']:+.1f}]",
                                     f"{v['p_adjusted']:.3g}", v["verdict"]])
            report.table(["arm", "difference to source-only (points)", "Holm-level interval", "Holm p", "verdict"],
                         verdict_rows, caption=f"Paired comparison with source-only on {target} test people")
            versus = direction.get("verdicts_vs_colour") or {}
            if versus:
                report.table(["arm (no target labels)", "difference to colour-match (points)", "Holm-level interval",
                              "Holm p", "verdict"],
                             [[arm_title(arm), f"{100 * v['difference']:+.1f}",
                               f"[{100 * v['holm_low']:+.1f}, {100 * v['holm_high']:+.1f}]", f"{v['p_adjusted']:.3g}",
                               v["verdict"]] for arm, v in versus.items()],
                             caption=f"Paired comparison with colour-match on {target} test people (a Holm family of its own)")
            gap = direction["gap"]
            if "residual_gap" in gap:
                gap_rows = [[arm_title(a), "n/a" if c is None else f"{100 * c:.0f}%"] for a, c in gap["closed"].items()]
                if gap.get("source_only_share") is not None:
                    gap_rows.append([f"{arm_title('source_only')} (reference)",
                                     f"{100 * gap['source_only_share']:.0f}%"])
                report.table(["arm (no target labels)", "share of the residual gap closed"], gap_rows,
                             caption=f"Residual gap = oracle − colour-match = {100 * gap['residual_gap']:.1f} points "
                                     f"(colour alone: {100 * gap['colour_gain']:+.1f})")
            if direction["verdicts"]:
                chart = _bar_chart(direction, task, figures / f"bars_{task}_{source}_to_{target}.png")
                report.image(chart, f"{task}: arms on {target} (error bars: {100 * config.stats.level:.0f}% intervals)")

    pseudo = results.get("pseudo_labels") or {}
    if pseudo:
        report.heading("Pseudo-labels of the self-training arms")
        report.text(
            f"Every {config.options.adapt.relabel_every} steps of its second phase a self-training arm labels the target's "
            f"train faces with its EMA model (the face and its mirror image) and keeps the labels whose max-softmax "
            f"confidence reaches the threshold at which {100 * config.options.adapt.precision:.0f}% of the source's "
            "validation faces are right"
            + (" (class-balanced in the max-softmax arms: the threshold sets how many faces are kept, and every "
               "predicted class gives the same share of its most confident faces; SA grades are not balanced)"
               if config.options.adapt.balance_classes else "")
            + ". Their accuracy is measured against the withheld target labels for this table "
            "only; training never reads them.")
        rows = []
        for name, arms in pseudo.items():
            for arm, seeds in arms.items():
                for index, first in enumerate(seeds[0]["rounds"]):
                    for task in first["tasks"]:
                        entries = [s["rounds"][index]["tasks"][task] for s in seeds if index < len(s["rounds"])]
                        kept = np.mean([e["kept"] / max(1, e["of"]) for e in entries])
                        scored = [e["accuracy"] for e in entries if e["accuracy"] is not None]
                        rows.append([name, arm_title(arm), task, first["step"], f"{100 * kept:.0f}%",
                                     f"{100 * np.mean(scored):.1f}" if scored else "n/a", len(entries)])
        report.table(["direction", "arm", "task", "phase step", "target faces kept", "accuracy of the kept labels (%)",
                      "seeds"], rows, caption="Pseudo-labels per labelling round (mean over seeds)")
        chart = _pseudo_label_chart(pseudo, figures / "pseudo_labels.png")
        report.image(chart, "Share of target faces kept (solid) and the accuracy of their labels (dashed) per round")

    strips = _sr_strips(config, results, sets, out_dir)
    if strips:
        report.heading("Super-resolved training faces")
        for path, caption in strips:
            report.image(path, caption)
    gaps = results.get("domain_gap")
    if gaps:
        report.heading("Domain gap")
        report.text(gaps["protocol"])
        report.table(gaps["header"], gaps["rows"], caption="Fréchet distance to the target's test faces (lower: closer)")
        report.text(gap_sentence(gaps))
    timings = results["timings"]
    report.heading("Time")
    report.table(["stage", "seconds"],
                 [["align and cache", f"{timings['align_and_cache']:.0f}"]]
                 + [[f"SR stage for {d}" + (" (given or cached)" if s == 0 else ""), f"{s:.0f}"]
                    for d, s in timings["sr_stages"].items()]
                 + [["cells (training + testing; cached cells cost 0)", f"{timings['cells']:.0f}"]],
                 caption="Wall time of this invocation")
    if timings.get("arm_seconds"):
        report.table(["arm and direction", "seconds"], [[k, f"{v:.0f}"] for k, v in timings["arm_seconds"].items()],
                     caption="What each arm costs from scratch, mean over seeds: its training, the earlier stages it "
                             "builds on (once each, though arms share them) and testing")
    report.code(json.dumps(to_dict(config), indent=1)[:6000])
    md = report.to_markdown()
    atomic_write_text(out_dir / "results.md", md)
    atomic_write_text(out_dir / "report.html", report.to_html())
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1, default=float))
    return {"html": out_dir / "report.html", "md": out_dir / "results.md", "json": out_dir / "results.json"}
