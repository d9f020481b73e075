"""Knowledge distillation (Hinton et al., 2015): a smaller student learns from a trained teacher's
outputs on every head, beside its own labels. `distill` (`facegan attributes distill`) trains the
student with the teacher and the same student alone, and compares them with the teacher. The
training maths is `attributes.step.DistillStep`, its loss `attributes.losses.distillation_loss`.

Per head group, on the same augmented faces the student sees (the teacher runs frozen, in eval mode):
- binary attributes (sigmoid): KL between the teacher's and the student's Bernoulli
  distributions, both softened at temperature T (logits / T);
- categorical tasks: KL(teacher || student) of the softmax at temperature T;
- SA-softmax heads: the same KL over all N+1 outputs (each binary attribute's 3, or N+1), so the
  student also learns when the teacher calls a face unrecognizable;
- regression (age): L2 between the student's and the teacher's predicted value, in decades (the
  scale of the L1 label loss); with DEX bins, the values are the expectations over the bins.
The KL terms are multiplied by T^2, which keeps their gradients on the scale of the label loss;
the sum is added to the label loss with `distill.weight`. Distillation uses every face of the
batch, labelled or not.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from attributes.config import DistillConfig
from attributes.losses import distillation_loss
from attributes.step import DistillStep

__all__ = ["DistillConfig", "distillation_loss", "DistillStep", "distill"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ the distill job
def _student_config(teacher_checkpoint: Path, overrides: list[str], steps: int | None, threads: int | None,
                    progress: bool):
    from attributes.config import AttributeRunConfig
    from attributes.inference import load_attribute_model
    from engine.config import apply_overrides, from_dict, to_dict

    config = load_attribute_model(teacher_checkpoint).config
    # the default student: the teacher's trunk at half width
    config.model = replace(config.model, trunk=replace(config.model.trunk, width=config.model.trunk.width / 2,
                                                       checkpoint="", channels=[]))
    config.slim = type(config.slim)()
    config.init_weights = ""
    config.members = 1  # an ensemble teacher distils into one network
    config = from_dict(AttributeRunConfig, apply_overrides(to_dict(config), overrides))
    config.trainer = replace(config.trainer, resume="auto", progress=progress,
                             max_steps=steps or config.trainer.max_steps, threads=threads or config.trainer.threads)
    return config


def distill(teacher_checkpoint: str | Path, out_dir: str | Path, overrides: list[str] | None = None,
            temperature: float = 4.0, weight: float = 1.0, steps: int | None = None, baseline: bool = True,
            split: str = "test", threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the student with the teacher (OUT/student) and, with `baseline`, the same student alone
    (OUT/alone: same config, seed and steps); evaluate teacher and students on `split`; write
    OUT/distill.md and OUT/distill.json."""
    # The training and evaluation jobs import this module (for DistillStep), so they are imported here.
    from attributes.evaluate import evaluate_checkpoint, headline_accuracy
    from attributes.inference import load_attribute_model
    from attributes.slimming import count_flops, count_parameters
    from attributes.train import train
    from engine.checkpoint import atomic_write_text

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
