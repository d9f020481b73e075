"""`facegan attributes distill`: a smaller student trained with a teacher's outputs
(`attributes/distill.py`) beside the same student trained alone, both evaluated with the teacher."""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from attributes.config import AttributeRunConfig
from attributes.distill import DistillConfig
from attributes.evaluation import evaluate_checkpoint, headline_accuracy
from attributes.slimming import count_flops, count_parameters
from attributes.train import load_attribute_model, train
from engine.checkpoint import atomic_write_text
from engine.config import apply_overrides, from_dict, to_dict

__all__ = ["distill", "register_cli"]


def _student_config(teacher_checkpoint: Path, overrides: list[str], steps: int | None, threads: int | None,
                    progress: bool):
    config = load_attribute_model(teacher_checkpoint).config
    # the default student: the teacher's trunk at half width
    config.model = replace(config.model, trunk=replace(config.model.trunk, width=config.model.trunk.width / 2,
                                                       checkpoint="", channels=[]))
    config.slim = type(config.slim)()
    config.init_weights = ""
    config.members = 1  # an ensemble teacher distils into one network
    config = from_dict(AttributeRunConfig, apply_overrides(to_dict(config), overrides))
    config.trainer = replace(config.trainer, resume=False, progress=progress,
                             max_steps=steps or config.trainer.max_steps, threads=threads or config.trainer.threads)
    return config


def distill(teacher_checkpoint: str | Path, out_dir: str | Path, overrides: list[str] | None = None,
            temperature: float = 4.0, weight: float = 1.0, steps: int | None = None, baseline: bool = True,
            split: str = "test", threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the student with the teacher (OUT/student) and, with `baseline`, the same student alone
    (OUT/alone: same config, seed and steps); evaluate teacher and students on `split`; write
    OUT/distill.md and OUT/distill.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = {"student": out / "student"} | ({"alone": out / "alone"} if baseline else {})
    checkpoints: dict[str, Path] = {"teacher": Path(teacher_checkpoint)}
    student = _student_config(Path(teacher_checkpoint), overrides or [], steps, threads, progress)
    for name, folder in runs.items():
        config = copy.deepcopy(student)  # one config for both runs; only the folder and the teacher differ
        config.trainer.out_dir = str(folder)
        config.distill = DistillConfig(str(teacher_checkpoint), temperature, weight) if name == "student" else DistillConfig()
        result = train(config, progress=progress)
        best = folder / "checkpoints" / "best.pt"
        checkpoints[name] = best if best.is_file() else Path(result["checkpoint"])
    work = Path(teacher_checkpoint).resolve().parent.parent
    summary: dict[str, Any] = {"teacher": str(teacher_checkpoint), "temperature": temperature, "weight": weight,
                               "steps": student.trainer.max_steps, "seed": student.trainer.seed, "split": split,
                               "student_trunk": {"name": student.model.trunk.name, "width": student.model.trunk.width},
                               "models": {}}
    for name, path in checkpoints.items():
        evaluated = evaluate_checkpoint(path, out / f"eval-{name}", split=split, work_dir=work)
        model = load_attribute_model(path).model
        summary["models"][name] = {"checkpoint": str(path), "accuracy": headline_accuracy(evaluated),
                                   "parameters": count_parameters(model),
                                   "flops": count_flops(model, next(iter(model.groups))),
                                   "age_mae": {k: s["age"][a]["mae"] for k, s in evaluated["datasets"].items() for a in s["age"]}}
    atomic_write_text(out / "distill.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "distill.md", _report(summary))
    return summary


def _report(summary: dict) -> str:
    models = summary["models"]
    datasets = list(next(iter(models.values()))["accuracy"])
    lines = [f"# Distillation from {summary['teacher']}", "",
             f"Student: {summary['student_trunk']['name']} at width {summary['student_trunk']['width']}, "
             f"{summary['steps']} steps, seed {summary['seed']}; T = {summary['temperature']}, weight "
             f"{summary['weight']}. 'alone' is the same student, config, seed and steps without the teacher. "
             f"Accuracy on the {summary['split']} split (mean binary accuracy at 0.5, else categorical).", "",
             "| model | parameters | FLOPs per face | " + " | ".join(datasets) + " |",
             "|---|---|---|" + "---|" * len(datasets)]
    for name, m in models.items():
        lines.append(f"| {name} | {m['parameters']:,} | {m['flops']:,} | " +
                     " | ".join(f"{100 * m['accuracy'].get(d, float('nan')):.2f}%" for d in datasets) + " |")
    if "alone" in models:
        gains = [models["student"]["accuracy"][d] - models["alone"]["accuracy"][d] for d in datasets]
        verdict = "beats" if all(g > 0 for g in gains) else ("does not beat" if all(g <= 0 for g in gains) else "is mixed against")
        lines += ["", f"The distilled student {verdict} the student trained alone: " +
                  ", ".join(f"{d} {100 * g:+.2f} points" for d, g in zip(datasets, gains)) + " (one seed)."]
    return "\n".join(lines) + "\n"


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="train a smaller student from a trained teacher's outputs, beside the same student trained alone",
        description="Knowledge distillation on every head: KL at temperature T for binary, categorical and SA-softmax "
        "heads (SA over all N+1 outputs), L2 to the teacher's value for age. The student is the teacher's run config "
        "with its trunk at half width, changed further by --set (e.g. --set model.trunk.width=0.125). Trains "
        "OUT/student (with the teacher) and OUT/alone (same student, config, seed and steps, labels only), evaluates "
        "them and the teacher, and writes OUT/distill.md and OUT/distill.json.",
    )
    p.add_argument("teacher", type=Path, help="a checkpoint of `attributes train`")
    p.add_argument("--out", type=Path, required=True, help="folder for student/, alone/, the evaluations and distill.md")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change the student's config (repeatable), e.g. model.trunk.width=0.125")
    p.add_argument("--temperature", type=float, default=4.0, help="softening temperature T (default 4)")
    p.add_argument("--weight", type=float, default=1.0, help="weight of the distillation term (default 1)")
    p.add_argument("--steps", type=int, help="training steps of each student (default: the teacher's)")
    p.add_argument("--no-baseline", action="store_true", help="do not train the student alone")
    p.add_argument("--split", default="test", choices=("val", "test"), help="split for the comparison (default test)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_distill)


def _run_distill(args: argparse.Namespace) -> int:
    summary = distill(args.teacher, args.out, args.overrides, args.temperature, args.weight, args.steps,
                      not args.no_baseline, args.split, args.threads, not args.no_progress)
    for name, m in summary["models"].items():
        print(f"{name}: " + ", ".join(f"{d} {100 * a:.2f}%" for d, a in m["accuracy"].items()) +
              f" ({m['parameters']:,} parameters)")
    print(f"report: {args.out / 'distill.md'}")
    return 0
