"""facegan's CelebA attribute preset against a plain CNN at the same wall-clock budget, k-fold over
the people of ../shared/data/celeba.

    python benchmarks/attributes_vs_plain.py                        # 5 folds (65 min to 1 h 50 min on 2 EPYC cores)
    python benchmarks/attributes_vs_plain.py --only 0,1             # some folds (each 13-22 min)
    python benchmarks/attributes_vs_plain.py --preset my.yaml --set model.trunk.width=0.5
    python benchmarks/attributes_vs_plain.py --quick                # a pipeline check (~3 min)
    python benchmarks/attributes_vs_plain.py --only 0 --set model.trunk.name=vgg_bn \
        --out runs/bench/candidate --reference-from runs/bench/attributes_vs_plain   # a recipe search

For each fold k of --folds (the people shuffled with --split-seed and dealt round-robin, so every
person is tested exactly once over the folds):
1. the plain reference (`plain_cnn_reference.py`: nine conv-BN-ReLU layers, BCE, Adam with cosine
   decay, flips; the central 178x178 of each image at 64 px) trains --epochs epochs on the
   faces of the other folds; the seconds its training loop takes are the budget T;
2. facegan trains --preset on the same people (`datasets.celeba.folds`/`fold`), its ensemble
   members sharing T (`trainer.max_seconds` stops each at its share). With `--schedule clock`
   (the default) each member's learning-rate schedule follows its clock
   (`optim.schedule_follows_clock`): the cosine ends as the member's share of T runs out, however
   fast the machine runs that day; a pilot run's steps per second only sets a step cap of twice
   what it predicts (a fold that reaches it with budget left warns). With `--schedule steps`
   `trainer.max_steps` is set from the pilot to fill T, and a slower or faster run than the
   pilot's stops part-way down its schedule or early;
3. both predict the faces of fold k, each as it is meant to be used (facegan: its aligned faces,
   the preset's flip averaging and thresholds; the reference: its crops at threshold 0.5).
Decoding, aligning and caching are excluded from T and printed separately. Faces the aligner
could not use are left out of both scores (the count is printed).

It prints, per fold and over all folds, the mean accuracy over the 40 attributes and the mean
balanced accuracy of each, with 95% intervals from a bootstrap over the test people, and the
paired difference facegan - plain with its interval. Results go to OUT/results.json and
OUT/results.md; every fold's models stay in OUT/fold<k>/, and a rerun reuses what is done.
Run it alone on the machine: the budget is wall-clock time.

--reference-from DIR takes each fold's reference (its budget T and its predictions) from an
earlier run's DIR/fold<k>/fold.json instead of training it again, so a candidate recipe costs only
its own training. That is for searching recipes on one machine in one session: the judged
comparison trains both in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from plain_cnn_reference import load_center_crops, predict_plain, train_plain  # noqa: E402

DATASET = "celeba"


def default_root() -> Path:
    shared = os.environ.get("FACEGAN_DATA")
    return Path(shared) / DATASET if shared else REPO.parent / "shared" / "data" / DATASET


def scores(correct: np.ndarray, truth: np.ndarray, known: np.ndarray) -> tuple[float, float]:
    """(mean accuracy over attributes, mean balanced accuracy over attributes) of (N, A) arrays."""
    accuracy, balanced = [], []
    for a in range(correct.shape[1]):
        k = known[:, a]
        if not k.any():
            continue
        accuracy.append(correct[k, a].mean())
        rates = [correct[k & (truth[:, a] == c), a].mean() for c in (0, 1) if (k & (truth[:, a] == c)).any()]
        balanced.append(np.mean(rates))
    return float(np.mean(accuracy)), float(np.mean(balanced))


def bootstrap(people: np.ndarray, ours: np.ndarray, plain: np.ndarray, truth: np.ndarray, known: np.ndarray,
              n_boot: int, seed: int) -> dict:
    """Both scores of each model and their differences, with 95% intervals from resampling the
    test people (all of a person's faces together)."""
    names = np.unique(people)
    rows_of = {name: np.flatnonzero(people == name) for name in names}
    rng = np.random.default_rng(seed)
    point = {"facegan": scores(ours, truth, known), "plain": scores(plain, truth, known)}
    draws = []
    for _ in range(n_boot):
        rows = np.concatenate([rows_of[n] for n in rng.choice(names, len(names))])
        a, p = scores(ours[rows], truth[rows], known[rows]), scores(plain[rows], truth[rows], known[rows])
        draws.append([a[0], a[1], p[0], p[1], a[0] - p[0], a[1] - p[1]])
    low, high = np.percentile(np.asarray(draws), [2.5, 97.5], axis=0)
    values = [*point["facegan"], *point["plain"], point["facegan"][0] - point["plain"][0],
              point["facegan"][1] - point["plain"][1]]
    keys = ["facegan_accuracy", "facegan_balanced", "plain_accuracy", "plain_balanced", "difference_accuracy",
            "difference_balanced"]
    return {key: {"value": v, "low": float(lo), "high": float(hi)} for key, v, lo, hi in zip(keys, values, low, high)}


def facegan_config(args, fold: int, out: Path, steps: int, seconds: float):
    from attributes.config import AttributeRunConfig
    from engine.config import load_config
    from engine.presets import resolve_preset

    overrides = [f"datasets.{DATASET}.root={args.root}", f"datasets.{DATASET}.test_fraction=0",
                 f"datasets.{DATASET}.val_fraction={args.val_fraction}", f"datasets.{DATASET}.folds={args.folds}",
                 f"datasets.{DATASET}.fold={fold}", f"datasets.{DATASET}.split_seed={args.split_seed}",
                 f"datasets.{DATASET}.train_split=train", f"datasets.{DATASET}.cache_dir={args.out / 'cache'}",
                 f"trainer.out_dir={out}", f"trainer.threads={args.threads}", "trainer.progress=false",
                 f"trainer.max_steps={steps}", f"trainer.max_seconds={seconds}", "trainer.resume=auto",
                 f"trainer.eval_every={max(1, steps)}", f"trainer.checkpoint_every={max(1, steps // 2)}",
                 f"optim.schedule_follows_clock={'true' if args.schedule == 'clock' else 'false'}", *args.overrides]
    config = load_config(AttributeRunConfig, resolve_preset(args.preset, "attributes"), overrides)
    if set(config.datasets) != {DATASET}:
        raise SystemExit(f"--preset must train on {DATASET} alone; it has {sorted(config.datasets)}")
    return config


def facegan_predictions(config, checkpoint: Path, work_dir: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, 0/1 decisions (N, 40), attribute names) of the fold's test faces as the preset decides them."""
    import torch

    from attributes.data import open_split
    from attributes.inference import calibrated_thresholds, load_attribute_model, predict_cache

    loaded = load_attribute_model(checkpoint)
    entry = config.datasets[DATASET]
    test = open_split(entry, config.model.trunk.input_size, "test", work_dir)
    predicted = predict_cache(loaded.model, test, DATASET, config.eval.batch_size, flip_tta=config.eval.flip_tta)
    (group,) = [g for g in loaded.model.groups[DATASET] if g.name == "binary"]
    prob = predicted["binary"]["prob"]
    thresholds = calibrated_thresholds(loaded.thresholds, DATASET, group)
    decisions = prob >= (thresholds if thresholds is not None else torch.full((prob.shape[1],), 0.5))
    names = [t.name for t in group.tasks]
    return [str(Path(r.path).resolve()) for r in test.records], decisions.numpy(), names


def cap_shortfall(schedule: str, steps_made: int, cap: int, seconds: float, budget: float) -> str:
    """Why facegan used less of the budget than it was given, or "" if it used it: on the clock,
    a member that reaches the step cap (twice what the measured rate predicts) stops early, so a
    rate measured too low (a busy machine during the pilot) quietly costs facegan training time."""
    if schedule == "clock" and steps_made >= cap and seconds < 0.95 * budget:
        return f"facegan stopped at its cap of {cap} steps per member after {seconds:.0f} s of its {budget:.0f} s"
    return ""


def member_steps_of(record: dict) -> list[int]:
    """The steps each member of a fold made (a fold recorded before members were counted apart
    holds the ensemble's step count, the least of its members', for each)."""
    return record.get("facegan_member_steps") or [record["facegan_steps"]] * record["facegan_members"]


def steps_text(member_steps: list[int]) -> str:
    """"1146 + 789": members of one run can differ in steps (the machine's speed drifts while they
    train one after another, or their recipes differ)."""
    return " + ".join(str(s) for s in member_steps)


def reused_plain_correct(reused: dict, people: list[str], truth: np.ndarray, known: np.ndarray, source: str) -> list:
    """The reference's right/wrong table from an earlier run's fold record, if that run scored the
    same faces, in the same order, with the same labels; else it refuses."""
    if reused["people"] != people or reused["truth"] != truth.tolist() or reused["known"] != known.tolist():
        raise SystemExit(f"the test faces differ from those of {source}: run with the same --folds, --split-seed and "
                         "--root, or train the reference again")
    return reused["plain_correct"]


def fold_recipe(args) -> dict:
    """What a fold's result depends on besides the data: a rerun reuses a fold only if these match."""
    return {"preset": str(args.preset), "overrides": list(args.overrides), "folds": args.folds, "epochs": args.epochs,
            "split_seed": args.split_seed, "seed": args.seed, "val_fraction": args.val_fraction,
            "reference_from": str(args.reference_from or ""), **({"schedule": "clock"} if args.schedule == "clock" else {})}


def run_fold(args, fold: int, dataset, images: dict[str, np.ndarray], rate: float | None) -> dict:
    from attributes.train import train
    from data_prep.datasets.splits import kfold_split

    out = args.out / f"fold{fold}"
    done = out / "fold.json"
    recipe = fold_recipe(args)
    if done.is_file():
        made = json.loads(done.read_text())
        if made.get("recipe") != recipe:
            raise SystemExit(f"{done} was made with another recipe ({made.get('recipe', 'not recorded')}), not {recipe}: "
                             "give another --out, or delete that fold to train it again")
        return made
    out.mkdir(parents=True, exist_ok=True)
    records = kfold_split(dataset.records, args.folds, fold, val_fraction=args.val_fraction, seed=args.split_seed)
    dataset_identity = {str(Path(r.path).resolve()): r.identity for r in records}
    names = dataset.schema.names
    train_records = [r for r in records if r.split == "train"]
    test_records = [r for r in records if r.split == "test"]

    def arrays(rows):
        x = np.stack([images[str(Path(r.path).resolve())] for r in rows])
        y = np.array([[r.labels.get(n, -1) for n in names] for r in rows], dtype=np.float32)
        return x, (y > 0).astype(np.float32), y >= 0

    print(f"fold {fold}: {len(train_records)} training faces, {len(test_records)} test faces of "
          f"{len({r.identity for r in test_records})} people", flush=True)
    reused = None
    if args.reference_from:
        source = args.reference_from / f"fold{fold}" / "fold.json"
        if not source.is_file():
            raise SystemExit(f"--reference-from {args.reference_from}: fold {fold} has no {source.name} there; run that "
                             "fold with its reference first")
        reused = json.loads(source.read_text())
        plain_seconds, plain_steps = reused["plain_seconds"], reused["plain_steps"]
        print(f"  plain CNN from {args.reference_from}: {plain_steps} steps in {plain_seconds:.0f} s (not retrained)",
              flush=True)
    else:
        x_train, y_train, m_train = arrays(train_records)
        model, plain_seconds, plain_steps = train_plain(x_train, y_train, m_train, epochs=args.epochs, seed=args.seed)
        x_test, _, _ = arrays(test_records)
        plain_prob = predict_plain(model, x_test)
        print(f"  plain CNN: {args.epochs} epochs, {plain_steps} steps in {plain_seconds:.0f} s", flush=True)

    config = facegan_config(args, fold, out / "facegan", 1, plain_seconds)
    members = max(1, config.members)
    per_member = plain_seconds / members
    steps = max(1, int(rate * per_member)) if rate else config.trainer.max_steps
    if args.schedule == "clock":
        steps *= 2  # only a cap: the clock ends the schedule and the run
    config = facegan_config(args, fold, out / "facegan", steps, per_member)
    start = time.perf_counter()
    summary = train(config, progress=False)
    facegan_seconds = sum(m["seconds"] for m in summary.get("members", [summary]))
    member_steps = [m["global_step"] for m in summary.get("members", [summary])]
    plan = f"{steps} steps planned" if args.schedule == "steps" else f"schedules on the clock (cap {steps} steps)"
    print(f"  facegan {args.preset}: {members} member(s), {plan}, {steps_text(member_steps)} steps made, "
          f"{facegan_seconds:.0f} s of training ({time.perf_counter() - start:.0f} s with caching)", flush=True)
    shortfall = cap_shortfall(args.schedule, max(member_steps), steps, facegan_seconds, plain_seconds)
    if shortfall:
        print(f"  WARNING: {shortfall}; the rate that set it ({rate:.2f} steps/s) was too low (was something else running "
              f"while the pilot or the previous fold measured it?): delete {args.out / 'pilot'} and {out}, and run this "
              "fold again alone", flush=True)
    paths, decisions, facegan_names = facegan_predictions(config, Path(summary["checkpoint"]), out / "facegan")
    ours_people = {dataset_identity[p] for p in paths}
    if ours_people != {r.identity for r in test_records}:
        raise SystemExit(f"fold {fold}: facegan's test people differ from the reference's ({len(ours_people)} against "
                         f"{len({r.identity for r in test_records})}): the two splits must be the same")
    column = [facegan_names.index(n) for n in names]
    ours_by_path = {p: decisions[i, column] for i, p in enumerate(paths)}
    kept = [i for i, r in enumerate(test_records) if str(Path(r.path).resolve()) in ours_by_path]
    truth = np.array([[r.labels.get(n, -1) for n in names] for r in test_records])[kept]
    known = truth >= 0
    truth = (truth > 0).astype(int)
    ours = np.stack([ours_by_path[str(Path(test_records[i].path).resolve())] for i in kept]).astype(int)
    people = [test_records[i].identity for i in kept]
    if reused is None:
        plain_correct = ((plain_prob[kept] >= 0.5).astype(int) == truth).tolist()
    else:
        plain_correct = reused_plain_correct(reused, people, truth, known, f"fold {fold} of {args.reference_from}")
    result = {
        "fold": fold, "recipe": recipe, "test_faces": len(test_records), "scored_faces": len(kept),
        "left_out_by_the_aligner": len(test_records) - len(kept),
        "plain_seconds": plain_seconds, "plain_steps": plain_steps, "facegan_seconds": facegan_seconds,
        "facegan_steps": summary["global_step"], "facegan_members": members, "facegan_member_steps": member_steps,
        "reference_from": str(args.reference_from or ""), "people": people,
        "facegan_correct": (ours == truth).tolist(), "plain_correct": plain_correct,
        "truth": truth.tolist(), "known": known.tolist(),
    }
    from engine.checkpoint import atomic_write_text

    atomic_write_text(done, json.dumps(result))
    return result


def pilot_rate(args, dataset) -> float:
    """facegan's training steps per second on fold 0's people (the Trainer's loop time)."""
    from attributes.train import train

    out = args.out / "pilot"
    record = out / "rate.json"
    recipe = fold_recipe(args)
    if record.is_file():
        measured = json.loads(record.read_text())
        if measured.get("recipe") == recipe:
            return measured["steps_per_second"]
    import shutil

    shutil.rmtree(out / "run", ignore_errors=True)  # a pilot of another recipe: measure afresh, not resume it
    config = facegan_config(args, 0, out / "run", args.pilot_steps, 0.0)
    config.members = 1
    summary = train(config, progress=False)
    rate = summary["global_step"] / summary["seconds"]
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"steps_per_second": rate, "steps": summary["global_step"], "seconds": summary["seconds"],
                                  "recipe": recipe}))
    return rate


def table(title: str, result: dict) -> list[str]:
    def cell(key: str) -> str:
        e = result[key]
        return f"{100 * e['value']:.2f} [{100 * e['low']:.2f}, {100 * e['high']:.2f}]"

    return [f"| {title} | {cell('facegan_accuracy')} | {cell('plain_accuracy')} | {cell('difference_accuracy')} | "
            f"{cell('facegan_balanced')} | {cell('plain_balanced')} | {cell('difference_balanced')} |"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=default_root(), help="the CelebA folder (default: $FACEGAN_DATA/celeba, "
                        "else ../shared/data/celeba beside the repository)")
    parser.add_argument("--preset", default="celeba80-vgg-closeup-all", help="the facegan attribute preset (a name or a YAML file)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the preset (repeatable), e.g. model.trunk.width=0.5")
    parser.add_argument("--folds", type=int, default=5, help="folds over the people (default 5)")
    parser.add_argument("--only", default="", help="comma-separated folds to run (default: all)")
    parser.add_argument("--epochs", type=int, default=15, help="the plain reference's epochs; their time is the budget")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="share of the training people facegan holds out for validation (and threshold calibration "
                             "when its preset asks); the reference trains on all of them either way (default 0)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="the reference's training seed")
    parser.add_argument("--pilot-steps", type=int, default=60, help="steps of the run that measures facegan's step rate")
    parser.add_argument("--schedule", choices=("clock", "steps"), default="clock",
                        help="facegan's learning-rate schedule: 'clock' ends its cosine when a member's share of the budget "
                             "is spent; 'steps' plans its length from the pilot's step rate (default clock)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--quick", action="store_true",
                        help="a pipeline check, not a measurement: 2 folds, fold 0, 1 epoch, 10 pilot steps, 200 resamples")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "attributes_vs_plain")
    parser.add_argument("--reference-from", type=Path, default=None, metavar="DIR",
                        help="reuse each fold's reference (budget and predictions) from an earlier run's --out DIR instead "
                             "of training it again: for recipe searches, not for the judged comparison")
    args = parser.parse_args(argv)
    if args.quick:
        args.folds, args.only, args.epochs = 2, args.only or "0", 1
        args.pilot_steps, args.n_boot = 10, 200
    args.root = args.root.resolve()
    if not args.root.is_dir():
        print(f"no CelebA folder at {args.root}: give --root or set FACEGAN_DATA", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    from data_prep.datasets.registry import load_dataset
    from engine.device import cpu_has_native_bfloat16, cpu_model_name

    cpu = f"{cpu_model_name()} (native bfloat16: {'yes' if cpu_has_native_bfloat16() else 'no'})"

    dataset = load_dataset(DATASET, args.root)
    folds = [int(f) for f in args.only.split(",")] if args.only else list(range(args.folds))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu}; torch threads {args.threads}; {len(dataset.records)} faces of "
          f"{len({r.identity for r in dataset.records})} people; folds {folds} of {args.folds}", flush=True)
    images: dict[str, np.ndarray] = {}
    if not args.reference_from:
        start = time.perf_counter()
        paths = [str(Path(r.path).resolve()) for r in dataset.records]
        images = dict(zip(paths, load_center_crops(paths)))
        print(f"decoded {len(paths)} centre crops for the reference in {time.perf_counter() - start:.0f} s (not in the "
              "budget)", flush=True)
    rate = pilot_rate(args, dataset)
    print(f"facegan pilot: {rate:.2f} steps/s (sets each member's steps to fill its share of the budget)", flush=True)
    results = []
    for fold in folds:
        results.append(run_fold(args, fold, dataset, images, rate))
        made = results[-1]
        if made["facegan_seconds"] > 0:  # the rate of a whole run is a better guess for the next fold than the pilot's
            rate = sum(member_steps_of(made)) / made["facegan_seconds"]

    def pooled(parts: list[dict]) -> dict:
        cat = {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in
               ("people", "facegan_correct", "plain_correct", "truth", "known")}
        return bootstrap(cat["people"], cat["facegan_correct"], cat["plain_correct"], cat["truth"], cat["known"].astype(bool),
                         args.n_boot, args.split_seed)

    reference = (f"; the reference's budget and predictions are reused from {args.reference_from}, an earlier run "
                 f"on this machine") if args.reference_from else ""
    lines = [f"# facegan ({args.preset}) against a plain CNN at the same wall-clock budget", "",
             f"Overrides: {', '.join(args.overrides) or 'none'}{reference}.", "",
             f"CPU: {cpu}, {args.threads} torch threads; CelebA at {args.root}; folds {folds} of {args.folds} "
             f"over people (split seed {args.split_seed}); budget = the reference's {args.epochs} epochs.", "",
             "| fold | faces scored (left out by the aligner) | reference s (steps) | facegan s (steps of each member) "
             "| facegan's share of the budget |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['fold']} | {r['scored_faces']} ({r['left_out_by_the_aligner']}) | {r['plain_seconds']:.0f} "
                     f"({r['plain_steps']}) | {r['facegan_seconds']:.0f} ({steps_text(member_steps_of(r))}) | "
                     f"{100 * r['facegan_seconds'] / r['plain_seconds']:.0f}% |")
    lines += ["", "Mean accuracy and mean balanced accuracy over the 40 attributes (%), [95% bootstrap interval over test "
              "people]:", "",
              "| folds | facegan accuracy | plain accuracy | difference | facegan balanced | plain balanced | difference |",
              "|---|---|---|---|---|---|---|"]
    summary = {"folds": {}, "args": {k: str(v) for k, v in vars(args).items()}, "cpu": cpu}
    for r in results:
        block = pooled([r])
        summary["folds"][r["fold"]] = {k: v for k, v in r.items() if not isinstance(v, list)} | {"scores": block}
        lines += table(str(r["fold"]), block)
    if len(results) > 1:
        summary["all"] = pooled(results)
        lines += table("all", summary["all"])
    text = "\n".join(lines) + "\n"
    print(text)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
