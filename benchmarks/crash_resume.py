"""Kill every long-running command the hard way, rerun it until it finishes, and compare.

For each command: one uninterrupted reference run; then runs killed with SIGKILL at seeded
random moments (at least --kills per command, rerunning after each kill until the command
finishes, in as many fresh folders as it takes to reach the count); then one run per named
fault point (engine.faults: the process kills itself inside a checkpoint write, a manifest
append, a cache shard, ...), again rerun until done. Every finished run is compared with the
reference:

- training (`gan train`, `sr train`, `attributes train` alone and as a 2-member ensemble, all
  --deterministic): every checkpoint's tensors bit-identical (weights, EMA, optimiser state),
  the same global step, metrics.jsonl with the same rows, none doubled or missing;
- folder jobs (`align`, `data cache`, `sr apply`): the same files with the same bytes and one
  manifest row per input;
- `transfer run` (the synthetic-quick preset, with a smaller budget): results.json.

Fields that record times or dates are left out of the comparison and listed in the output.
Every run is a subprocess with FACEGAN_THREADS=1; kills go to its whole process group.
`--fuzz-examples N` then runs N generated inputs through every label-file parser and the image
loader (tests/fuzzing.py) and prints what they did.

    python benchmarks/crash_resume.py                      # about 13 minutes on 2 cores
    python benchmarks/crash_resume.py --only gan --kills 8
    python benchmarks/crash_resume.py --skip-crashes --fuzz-examples 10000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Keys left out of every comparison because they record when or how fast something ran.
TIME_KEYS = ("created", "seconds", "elapsed", "wall", "time", "per_second", "timings", "duration", "started",
             "finished_at", "date")
# Sections that describe only the last invocation (its counts: written now, already done), which a
# rerun after a kill changes by design.
RUN_KEYS = ("this_run", "last_run")


def is_time_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in RUN_KEYS or any(part in lowered for part in TIME_KEYS)


def canonical(value) -> str:
    """A JSON text of `value` in which NaN equals NaN (json writes both as NaN)."""
    return json.dumps(value, sort_keys=True, default=str)


def without_times(value, dropped: set[str]):
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            if is_time_key(str(key)):
                dropped.add(str(key))
            else:
                kept[key] = without_times(item, dropped)
        return kept
    if isinstance(value, list):
        return [without_times(item, dropped) for item in value]
    return value


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} logical cores"


# ---------------------------------------------------------------------------------------------
# running a command


@dataclass
class Outcome:
    status: str  # finished | killed | failed
    seconds: float
    tail: str = ""


def run_once(argv: list[str], log: Path, *, kill_after: float | None = None, fault: str | None = None) -> Outcome:
    """One `facegan ARGV` subprocess; SIGKILL its process group after `kill_after` seconds."""
    env = {**os.environ, "FACEGAN_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop("FACEGAN_FAULT", None)
    if fault:
        env["FACEGAN_FAULT"] = fault
    start = time.perf_counter()
    with open(log, "ab") as sink:
        sink.write(f"\n$ facegan {' '.join(argv)}  (fault={fault}, kill_after={kill_after})\n".encode())
        sink.flush()
        process = subprocess.Popen([sys.executable, "-m", "transfer.cli", *argv], env=env, stdout=sink,
                                   stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True)
        try:
            code = process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return Outcome("killed", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if code == 0:
        return Outcome("finished", seconds)
    if code == -signal.SIGKILL:
        return Outcome("killed", seconds)
    return Outcome("failed", seconds, log.read_text(errors="replace")[-1500:])


# ---------------------------------------------------------------------------------------------
# comparisons: each returns (number of things compared, differences)


def json_leaves(tree, prefix: str = "") -> dict[str, object]:
    """Every leaf of a JSON document by its path ("/tasks/Male/0/accuracy")."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in json_leaves(value, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in json_leaves(value, f"{prefix}/{i}").items()}
    return {prefix: tree}


def compare_checkpoints(path_a: Path, path_b: Path, label: str) -> tuple[int, list[str]]:
    """The step and every tensor of weights, EMA weights and optimiser state, bit for bit."""
    from engine.checkpoint import load_checkpoint, training_state_differences

    compared, differences = training_state_differences(load_checkpoint(path_a), load_checkpoint(path_b))
    return compared, [f"{label}: {d}" for d in differences]


def compare_training(reference: Path, run: Path, dropped: set[str]) -> tuple[int, list[str]]:
    compared, differences = 0, []
    ref_checkpoints = sorted(p.relative_to(reference) for p in reference.rglob("checkpoints/latest.pt"))
    run_checkpoints = sorted(p.relative_to(run) for p in run.rglob("checkpoints/latest.pt"))
    if ref_checkpoints != run_checkpoints:
        differences.append(f"checkpoints {run_checkpoints} != {ref_checkpoints}")
    for relative in ref_checkpoints:
        if (run / relative).is_file():
            count, found = compare_checkpoints(reference / relative, run / relative, str(relative))
            compared += count
            differences += found
    ref_metrics = sorted(p.relative_to(reference) for p in reference.rglob("metrics.jsonl"))
    for relative in ref_metrics:
        rows_a = [json.loads(line) for line in (reference / relative).read_text().splitlines() if line.strip()]
        target = run / relative
        rows_b = [json.loads(line) for line in target.read_text().splitlines() if line.strip()] if target.is_file() else []
        keys_b = [(r.get("split"), r.get("step")) for r in rows_b]
        doubled = len(keys_b) - len(set(keys_b))
        if doubled:
            differences.append(f"{relative}: {doubled} row(s) logged twice")
        a = [without_times(r, dropped) for r in rows_a]
        b = [without_times(r, dropped) for r in rows_b]
        compared += len(a)
        if canonical(a) != canonical(b):
            missing = {(r.get("split"), r.get("step")) for r in rows_a} - set(keys_b)
            differences.append(f"{relative}: rows differ ({len(b)} vs {len(a)}; missing {sorted(missing)[:5]})")
    return compared, differences


def _files(folder: Path, ignore: set[str]) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ignore and not p.name.endswith(".log")}


def compare_folders(reference: Path, run: Path, dropped: set[str], *, manifest: str | None, key: str | None,
                    json_files: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """Same files with the same bytes; the manifest one row per input and equal row by row; JSON
    side files equal apart from time fields."""
    ignore = {*json_files, *(() if manifest is None else (manifest,))}
    a, b = _files(reference, ignore), _files(run, ignore)
    differences = []
    if a.keys() != b.keys():
        differences.append(f"files: missing {sorted(a.keys() - b.keys())[:3]}, extra {sorted(b.keys() - a.keys())[:3]}")
    differences += [f"{name}: bytes differ" for name in sorted(a.keys() & b.keys()) if a[name] != b[name]]
    compared = len(a)
    if manifest is not None:
        rows = []
        for folder in (reference, run):
            with open(folder / manifest, newline="") as handle:
                table = list(csv.DictReader(handle))
            dropped.update(k for row in table for k in row if is_time_key(k))
            rows.append([{k: v for k, v in row.items() if not is_time_key(k)} for row in table])
        keys = [row[key] for row in rows[1]]
        if len(keys) != len(set(keys)):
            differences.append(f"{manifest}: {len(keys) - len(set(keys))} input(s) listed twice")
        if sorted(rows[0], key=lambda r: r[key]) != sorted(rows[1], key=lambda r: r[key]):
            differences.append(f"{manifest}: rows differ ({len(rows[1])} vs {len(rows[0])})")
        compared += len(rows[0])
    for name in json_files:
        for path_a in sorted(reference.rglob(name)):
            path_b = run / path_a.relative_to(reference)
            compared += 1
            if not path_b.is_file() or canonical(without_times(json.loads(path_a.read_text()), dropped)) != canonical(
                    without_times(json.loads(path_b.read_text()), dropped)):
                differences.append(f"{path_a.relative_to(reference)} differs")
    return compared, differences


# ---------------------------------------------------------------------------------------------
# the commands


@dataclass
class Command:
    name: str
    argv: Callable[[Path], list[str]]  # the output folder -> facegan arguments (a rerun is the same command)
    compare: Callable[[Path, Path, set[str]], tuple[int, list[str]]]
    points: list[str]  # fault points, with the occurrence to die at
    needs: list[str] = field(default_factory=list)  # commands whose reference output this one reads


TRAINER = ["--set", "trainer.progress=false", "--set", "trainer.tensorboard=false", "--set", "trainer.log_every=1"]
# gan train goes through every training fault point; the others through two each, so that each
# point is met by at least two families and the script stays within 15 minutes on 2 cores.
TRAINING_POINTS = ["checkpoint-rename@3", "checkpoint-rotate@2", "trainer-step@37", "metrics-line@20"]


def commands(work: Path) -> list[Command]:
    synthetic = work / "synthetic"
    faces, many_faces = work / "faces", work / "many-faces"

    def gan(out: Path) -> list[str]:
        return ["gan", "train", "--model", "dcgan", "--image-size", "32", "--steps", "300", "--batch-size", "8",
                "--deterministic", "--threads", "1", "--resume", "auto", "--out", str(out), *TRAINER,
                "--set", f"data.root={synthetic / 'gan'}", "--set", "data.synthetic_identities=32",
                "--set", "data.synthetic_images_per_identity=2", "--set", "gan.dcgan.g_channels=16",
                "--set", "gan.dcgan.d_channels=16", "--set", "trainer.checkpoint_every=25",
                "--set", "trainer.sample_every=100"]

    def sr(out: Path) -> list[str]:
        return ["sr", "train", "--steps", "200", "--batch-size", "8", "--deterministic", "--threads", "1",
                "--resume", "auto", "--out", str(out), *TRAINER, "--set", f"data.root={synthetic / 'sr'}",
                "--set", "sr.model.input_size=8", "--set", "sr.model.output_size=32", "--set", "sr.model.channels=8",
                "--set", "sr.model.num_blocks=1", "--set", "sr.model.min_channels=4",
                "--set", "sr.model.critic_channels=4", "--set", "sr.pretrain_steps=80",
                "--set", "data.synthetic_identities=24", "--set", "data.synthetic_images_per_identity=2",
                "--set", "data.eval_images=8", "--set", "trainer.checkpoint_every=25", "--set", "trainer.eval_every=100",
                "--set", "trainer.sample_every=0"]

    def attributes(out: Path, members: int = 1, steps: int = 200) -> list[str]:
        return ["attributes", "train", "--dataset", "synthetic", "--steps", str(steps), "--batch-size", "16",
                "--deterministic", "--threads", "1", "--resume", "auto", "--members", str(members), "--out", str(out),
                *TRAINER, "--set", f"datasets.synthetic.root={synthetic / 'attributes'}",
                "--set", "datasets.synthetic.synthetic_identities=40", "--set", "model.trunk.width=0.125",
                "--set", "model.head.conv_channels=8", "--set", "model.head.reduce_channels=8",
                "--set", "model.head.feature_dim=16", "--set", "trainer.checkpoint_every=25",
                "--set", "trainer.eval_every=100"]

    def align(out: Path) -> list[str]:
        return ["align", str(faces / "images"), str(out), "--output-size", "64", "--batch-size", "8", "--threads", "1",
                "--quiet"]

    def cache(out: Path) -> list[str]:
        return ["data", "cache", "--dataset", "synthetic", "--root", str(many_faces), "--size", "48", "--threads", "1",
                "--shard-size", "16", "--workers", "0", "--no-progress", str(out)]

    def sr_apply(out: Path) -> list[str]:
        checkpoint = work / "sr train" / "reference" / "checkpoints" / "latest.pt"
        return ["sr", "apply", str(checkpoint), str(many_faces / "images"), str(out), "--batch-size", "8", "--no-progress",
                "--threads", "1"]

    def transfer(out: Path) -> list[str]:
        return ["transfer", "run", "synthetic-quick", "--out", str(out), "--threads", "1", "--no-progress",
                "--steps", "20", "--dataset", f"studio={synthetic / 'studio'}", "--dataset", f"wild={synthetic / 'wild'}",
                "--set", "domains.studio.synthetic_identities=30", "--set", "domains.wild.synthetic_identities=30",
                "--set", "arms=[source_only,sr_mix]", "--set", "stats.n_boot=100"]

    def results(reference: Path, run: Path, dropped: set[str]) -> tuple[int, list[str]]:
        # Paths inside the study folder (e.g. sr_checkpoints) are compared relative to it.
        a, b = (json.loads((folder / "results.json").read_text()) for folder in (reference, run))
        # A study's SR stage folder is named by a fingerprint that includes its (absolute) cache
        # folder, so the paths differ between two study folders: the checkpoints they name are compared.
        compared, differences = 0, []
        stages_a, stages_b = a.pop("sr_checkpoints", {}), b.pop("sr_checkpoints", {})
        if stages_a.keys() != stages_b.keys():
            differences.append(f"results.json: SR stages {sorted(stages_b)} != {sorted(stages_a)}")
        for domain in stages_a.keys() & stages_b.keys():
            count, found = compare_checkpoints(Path(stages_a[domain]), Path(stages_b[domain]), f"SR stage {domain}")
            compared += count
            differences += found
        flat_a, flat_b = json_leaves(without_times(a, dropped)), json_leaves(without_times(b, dropped))
        differing = sorted(k for k in flat_a.keys() | flat_b.keys() if canonical(flat_a.get(k)) != canonical(flat_b.get(k)))
        return compared + len(flat_a), differences + [f"results.json: {k} differs" for k in differing[:5]]

    return [
        Command("gan train", gan, compare_training, TRAINING_POINTS),
        Command("sr train", sr, compare_training, ["checkpoint-rename@3", "metrics-line@20"]),
        Command("attributes train", attributes, compare_training, ["checkpoint-rotate@2", "trainer-step@37"]),
        Command("attributes train --members 2", lambda out: attributes(out, members=2, steps=100), compare_training,
                ["checkpoint-rename@6", "trainer-step@150"]),
        Command("align", align, lambda a, b, d: compare_folders(a, b, d, manifest="manifest.csv", key="source",
                                                                  json_files=("summary.json", "align_config.json")),
                ["manifest-append@4"]),
        Command("data cache", cache, lambda a, b, d: compare_folders(a, b, d, manifest=None, key=None,
                                                                       json_files=("index.json",)),
                ["cache-shard@3"]),
        Command("sr apply", sr_apply, lambda a, b, d: compare_folders(a, b, d, manifest="labels.csv", key="path",
                                                                        json_files=("sr_apply.json",)),
                ["manifest-append@5"], needs=["sr train"]),
        Command("transfer run synthetic-quick", transfer, results,
                ["trainer-step@30"]),
    ]


@dataclass
class Row:
    command: str
    kills: int = 0
    fault_kills: int = 0
    resumes: int = 0
    compared: int = 0
    runs_compared: int = 0
    differences: list[str] = field(default_factory=list)
    reference_seconds: float = 0.0
    seconds: float = 0.0


def finish(command: Command, out: Path, log: Path, row: Row, rng: random.Random, reference_seconds: float,
           kills_left: int) -> int:
    """Rerun `command` into `out` until it finishes, killing it at random moments while
    `kills_left` > 0. Returns the kills made."""
    kills = 0
    for _ in range(50):
        # The first attempt dies anywhere from start-up to near the end; a rerun has less left to
        # do, so it is killed earlier, which lets one folder collect several kills.
        share = rng.uniform(0.3, 0.9) if kills == 0 else rng.uniform(0.15, 0.6)
        delay = share * reference_seconds if kills < kills_left else None
        outcome = run_once(command.argv(out), log, kill_after=delay)
        if outcome.status == "finished":
            return kills
        if outcome.status == "failed":
            row.differences.append(f"a rerun failed: {outcome.tail[-600:]}")
            return kills
        kills += 1
        row.resumes += 1
    row.differences.append("did not finish after 50 reruns")
    return kills


def crash_command(command: Command, work: Path, rng: random.Random, kills_wanted: int, *,
                  reference_only: bool = False) -> Row:
    row = Row(command.name)
    started = time.perf_counter()
    folder = work / command.name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "runs.log"
    reference = folder / "reference"
    outcome = run_once(command.argv(reference), log)
    row.reference_seconds = outcome.seconds
    if outcome.status != "finished":
        row.differences.append(f"the reference run failed: {outcome.tail[-800:]}")
        return row
    row.seconds = time.perf_counter() - started
    if reference_only:
        return row
    dropped: set[str] = set()

    def compare(run: Path) -> None:
        compared, differences = command.compare(reference, run, dropped)
        row.compared += compared
        row.runs_compared += 1
        row.differences += [f"{run.name}: {d}" for d in differences]
        if not differences:  # a folder with differences stays, for a look (with --work)
            shutil.rmtree(run, ignore_errors=True)

    sequence = 0
    while row.kills < kills_wanted and sequence < 10:
        run = folder / f"random-{sequence}"
        row.kills += finish(command, run, log, row, rng, outcome.seconds, kills_wanted - row.kills)
        compare(run)
        sequence += 1
    for point in command.points:
        run = folder / f"fault-{point.replace('@', '-')}"
        first = run_once(command.argv(run), log, fault=point)
        if first.status != "killed":
            row.differences.append(f"fault point {point} was not reached ({first.status})")
        else:
            row.fault_kills += 1
            row.resumes += 1
        finish(command, run, log, row, rng, outcome.seconds, 0)
        compare(run)
    row.seconds = time.perf_counter() - started
    row.dropped = sorted(dropped)  # type: ignore[attr-defined]
    return row


def prepare_faces(work: Path) -> None:
    """Synthetic 'wild' faces (made once, outside the kills): 240 for align, whose detector makes
    them seconds of work, and 2,000 for data cache and sr apply, which are fast per face."""
    log = work / "prepare.log"
    for folder, count in (("faces", 240), ("many-faces", 2000)):
        outcome = run_once(["data", "synth", str(work / folder), "--num-identities", str(count // 2),
                            "--images-per-identity", "2", "--size", "64", "--domains", "wild", "--no-progress"], log)
        if outcome.status != "finished":
            raise SystemExit(f"could not make the synthetic faces: {outcome.tail}")


def print_crash_table(rows: list[Row]) -> None:
    print()
    print(f"{'command':34s} {'kills':>5s} {'fault':>5s} {'resumes':>7s} {'runs':>4s} {'compared':>8s} "
          f"{'diffs':>5s} {'ref s':>6s} {'total s':>7s}")
    for row in rows:
        print(f"{row.command:34s} {row.kills:5d} {row.fault_kills:5d} {row.resumes:7d} {row.runs_compared:4d} "
              f"{row.compared:8d} {len(row.differences):5d} {row.reference_seconds:6.1f} {row.seconds:7.1f}")
    total = Row("total", sum(r.kills for r in rows), sum(r.fault_kills for r in rows), sum(r.resumes for r in rows),
                sum(r.compared for r in rows), sum(r.runs_compared for r in rows))
    print(f"{'total':34s} {total.kills:5d} {total.fault_kills:5d} {total.resumes:7d} {total.runs_compared:4d} "
          f"{total.compared:8d} {sum(len(r.differences) for r in rows):5d}")
    print("kills: SIGKILLs at seeded random moments; fault: SIGKILLs at named fault points (FACEGAN_FAULT); "
          "runs: killed runs finished by reruns and compared with the uninterrupted one; compared: tensors, "
          "metrics rows, files, manifest rows and results fields compared")
    dropped = sorted({key for row in rows for key in getattr(row, "dropped", [])})
    print(f"left out of the comparison (times, dates, counts of the last invocation): {', '.join(dropped) or 'nothing'}")
    for row in rows:
        for difference in row.differences:
            print(f"DIFFERENCE {row.command}: {difference}")


def fuzz(examples: int, seed: int) -> int:
    sys.path.insert(0, str(REPO / "tests"))
    import fuzzing

    print(f"\nfuzzing: {examples} generated inputs per target (seed {seed})")
    print(f"{'target':42s} {'examples':>8s} {'parsed':>7s} {'refused':>7s} {'w/ line':>7s} {'s':>6s}")
    jobs = [(t.name, lambda t=t: fuzzing.fuzz_target(t, examples, derandomize=False, seed=seed))
            for t in fuzzing.label_targets()]
    jobs += [("image loader (load_rgb)", lambda: fuzzing.fuzz_images(examples, derandomize=False, seed=seed)),
             ("UTKFace file names", lambda: fuzzing.fuzz_utkface_names(examples, derandomize=False, seed=seed))]
    failures = 0
    total = 0
    for name, job in jobs:
        started = time.perf_counter()
        try:
            tally = job()
        except Exception as exc:  # noqa: BLE001 - any exception is a broken contract: show hypothesis' example
            failures += 1
            print(f"{name:42s} BUG: {type(exc).__name__}: {str(exc)[:400]}")
            for note in getattr(exc, "__notes__", [])[:3]:
                print(f"    {note[:400]}")
            continue
        total += tally.examples
        print(f"{name:42s} {tally.examples:8d} {tally.parsed:7d} {tally.refused:7d} {tally.with_line:7d} "
              f"{time.perf_counter() - started:6.1f}")
    print(f"{'total':42s} {total:8d}   targets {len(jobs)}, broken contracts {failures}")
    print("parsed: read without an error; refused: a FaceganError that names the file (ImageLoadError for images, "
          "the documented ValueError for UTKFace names); w/ line: refusals that also name the line")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5, help="random-time SIGKILLs per command (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times and of the fuzzing (default 0)")
    parser.add_argument("--only", action="append", default=[],
                        help="run only commands whose name contains this (repeatable)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed at the end)")
    parser.add_argument("--fuzz-examples", type=int, default=200,
                        help="generated inputs per parser and for the image loader (default 200; 0 skips)")
    parser.add_argument("--skip-crashes", action="store_true", help="only fuzz")
    args = parser.parse_args(argv)

    print(f"crash_resume: {cpu_name()}; python {platform.python_version()}; seed {args.seed}")
    work = args.work or Path(tempfile.mkdtemp(prefix="facegan-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    failures = 0
    started = time.perf_counter()
    try:
        if not args.skip_crashes:
            rng = random.Random(args.seed)
            prepare_faces(work)
            wanted = [c for c in commands(work) if not args.only or any(o in c.name for o in args.only)]
            names = {c.name for c in wanted}
            rows = []
            for command in commands(work):
                if command.name not in names and not any(command.name in c.needs for c in wanted):
                    continue
                needed_only = command.name not in names
                row = crash_command(command, work, rng, args.kills, reference_only=needed_only)
                if needed_only:
                    continue
                rows.append(row)
                print(f"  {row.command}: {row.kills}+{row.fault_kills} kills, {len(row.differences)} differences, "
                      f"{row.seconds:.0f} s", flush=True)
            print_crash_table(rows)
            failures += sum(len(r.differences) for r in rows)
        if args.fuzz_examples > 0:
            failures += fuzz(args.fuzz_examples, args.seed)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
