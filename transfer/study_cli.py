"""`facegan transfer run CONFIG`: the cross-domain study from a YAML preset."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine.config import load_config
from engine.presets import resolve_preset

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "transfer",
        help="cross-domain attribute study: train every arm, test on every domain, report with intervals",
        description="The cross-domain attribute study of SPEC section 6. A study trains each arm (source only, target "
        "only, SR-mix, bicubic-mix, augment-mix, colour-match, DANN, joint) with the same trunk and step budget for "
        "every seed, tests each on every domain's identity-disjoint test split, and writes report.html, results.md and "
        "results.json with balanced accuracy, bootstrap intervals over test people and Holm-corrected comparisons "
        "against source-only.",
    )
    sub = group.add_subparsers(dest="transfer_command", metavar="TRANSFER_COMMAND", required=True)
    p = sub.add_parser(
        "run",
        help="run (or resume) a study from a YAML preset",
        description="Run a study. Settings come from the dataclass defaults (transfer/config.py), then CONFIG, then "
        "the shortcut options, then --set KEY=VALUE. Stages (alignment caches, SR models, transformed face sets) and "
        "cells (one trained model per recipe and seed) are cached under fingerprints of their settings in OUT, so a "
        "rerun skips what is done and an interrupted cell resumes from its checkpoint. Presets: configs/transfer/.",
    )
    p.add_argument("config", type=Path, help="study preset, e.g. configs/transfer/lfw-celeba-quick.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting by its dotted path (repeatable), e.g. budget.steps=200 or "
                   "'arms=[source_only,colour_match]'")
    p.add_argument("--out", help="study folder (out_dir)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (seeds)")
    p.add_argument("--steps", type=int, help="optimiser steps of every arm (budget.steps)")
    p.add_argument("--threads", type=int, help="torch CPU threads (budget.threads); set it when other jobs share the machine")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (budget.device)")
    p.add_argument("--dry-run", action="store_true", help="check the configuration and list the trainings it needs, then stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def build_config(args: argparse.Namespace):
    from transfer.config import StudyConfig

    shortcuts = {"out_dir": args.out, "budget.steps": args.steps, "budget.threads": args.threads,
                 "budget.device": args.device,
                 "seeds": f"[{args.seeds}]" if args.seeds else None}
    overrides = [f"{k}={v}" for k, v in shortcuts.items() if v is not None]
    return load_config(StudyConfig, resolve_preset(args.config, "transfer"), overrides + list(args.overrides))


def _run(args: argparse.Namespace) -> int:
    from transfer.arms import recipe_for
    from transfer.study import run_study, validate

    config = build_config(args)
    directions = validate(config)
    if args.dry_run:
        distinct = {}
        for s, t in directions:
            for arm in config.arms:
                recipe = recipe_for(arm, s, t, config)
                distinct.setdefault(str(recipe.key()), []).append(f"{arm} {s}->{t}")
        print(f"study {config.name!r}: {len(directions)} direction(s), {len(config.arms)} arm(s), {len(config.seeds)} seed(s); "
              f"{len(distinct)} distinct recipe(s) x {len(config.seeds)} seed(s) = {len(distinct) * len(config.seeds)} trainings "
              f"of {config.budget.steps} steps")
        for uses in distinct.values():
            print("  " + ", ".join(uses))
        return 0
    results = run_study(config, progress=not args.no_progress)
    out = Path(config.out_dir)
    from transfer.analysis import sentences

    for task, per_direction in results["tasks"].items():
        for direction in per_direction.values():
            for line in sentences(direction, task):
                print(line)
    print(f"report: {out / 'report.html'}  (also results.md, results.json)")
    return 0
