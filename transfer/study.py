"""The cross-domain attribute study (`facegan transfer run`) as one resumable command.

    config = load_config(StudyConfig, resolve_preset("lfw-celeba-quick", "transfer"))
    results = run_study(config)          # writes report.html, results.md, results.json

What happens, in order:
1. Every domain is aligned once into its aligned-face cache and split by identity (the
   domain's `test_fraction` and `val_fraction` of the people are held out).
2. SR stages: each target domain whose SR model an arm needs gets one, trained with
   `facegan sr train` on that domain's TRAIN split only (or given as a checkpoint, which is
   checked to have seen that split only). A stage is cached under a fingerprint of its config.
3. Cells: each distinct training recipe (`transfer.arms`) x seed is trained with the attribute
   trainer (`attributes.train.fit`) for the same budget, and its EMA model predicts every domain's test split. Two arms
   with the same recipe (source-only A->B and target-only B->A; joint in both directions)
   share one cell. A cell's predictions are cached under a fingerprint of everything it
   depends on; an interrupted cell resumes from its last checkpoint. An adapting recipe's cell
   starts from the trained model of the cell before it (its first phase, or the arm it adds
   AdaBN to), trained first if it is not cached.
4. Statistics (`transfer.stats`), the domain-gap table (`transfer.domain_gap`; its dlib
   embeddings are kept in `<study>/domain_gap/`, so a rerun does not embed the faces again) and
   the report (`transfer.study_report`).

Binary decisions use the threshold 0.5: choosing it on any domain's labels would leak that
domain's label prior into the arms that are not allowed to see target labels.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attributes.config import AttributeRunConfig, EvalConfig, SAConfig
from attributes.data import DatasetSplits
from attributes.inference import load_attribute_model, predict_cache
from attributes.model import build_attribute_model
from attributes.train import fit
from data_prep.datasets.schema import TaskKind
from engine.checkpoint import atomic_write_text, config_fingerprint, load_checkpoint, module_weights
from engine.config import ConfigError, load_config, to_dict, without_later_defaults
from engine.device import choose_device, configure_threads
from engine.errors import FaceganError
from data_prep.sources import LATER_SOURCE_DEFAULTS, source_root
from engine.trainer import TrainerConfig
from transfer.arms import Recipe, is_known_arm, recipe_for, faces_for_testing
from transfer.config import ADABN_SUFFIX, ARM_NAMES, AdaptationConfig, SRStageConfig, StudyConfig
from transfer.facesets import FaceSets

__all__ = ["run_study", "plan_study", "plan_cells", "StudyError", "Cell", "parse_direction", "cell_run_config", "load_cell_model"]

log = logging.getLogger(__name__)


class StudyError(FaceganError):
    """A study that cannot run as configured."""


def parse_direction(direction: str) -> tuple[str, str]:
    parts = [p.strip() for p in direction.replace("→", "->").split("->")]
    if len(parts) != 2 or not all(parts):
        raise StudyError(f"a direction looks like 'source->target', not {direction!r}")
    return parts[0], parts[1]


def validate(config: StudyConfig) -> list[tuple[str, str]]:
    if len(config.domains) < 2:
        raise StudyError("a study needs at least two domains (study.domains)")
    directions = [parse_direction(d) for d in config.directions]
    if not directions:
        raise StudyError("a study needs at least one direction 'source->target' (study.directions)")
    for source, target in directions:
        for domain in (source, target):
            if domain not in config.domains:
                raise StudyError(f"direction {source}->{target}: unknown domain {domain!r}; domains: {sorted(config.domains)}")
        if source == target:
            raise StudyError(f"direction {source}->{target}: source and target must differ")
    unknown = [a for a in config.arms if not is_known_arm(a)]
    if unknown:
        raise StudyError(f"unknown arm(s) {unknown}; arms: {', '.join(ARM_NAMES)}, each also as ARM{ADABN_SUFFIX}")
    if "source_only" not in config.arms:
        raise StudyError("every study needs the source_only arm: it is what the other arms are compared with")
    if not config.seeds:
        raise StudyError("a study needs at least one seed (study.seeds)")
    if not config.tasks:
        raise StudyError("a study needs at least one task (study.tasks), e.g. Male")
    for source, target in directions:
        for arm in config.arms:
            try:
                recipe_for(arm, source, target, config)
            except ValueError as exc:
                raise StudyError(f"arm {arm}: {exc}") from None
    for name, entry in config.domains.items():
        if entry.test_fraction and entry.test_fraction < 0.3:
            log.warning("domain %s holds out only %.0f%% of its people for testing; the study protocol asks for >= 30%%",
                        name, 100 * entry.test_fraction)
    return directions


@dataclass
class Cell:
    """One trained model: a recipe and a seed, and where its outputs go."""

    recipe: Recipe
    seed: int
    fingerprint: str
    folder: Path
    previous: "Cell | None" = None  # the cell whose trained model this one starts from

    @property
    def predictions_path(self) -> Path:
        return self.folder / "predictions.npz"

    @property
    def trained_path(self) -> Path:
        return self.folder / "trained.json"


# ------------------------------------------------------------------------------------------
# SR stages
# ------------------------------------------------------------------------------------------
_SPLIT_FIELDS = ("source", "test_fraction", "val_fraction", "split_seed", "template", "align", *LATER_SOURCE_DEFAULTS)


def _check_sr_checkpoint(path: Path, domain: str, config: StudyConfig) -> None:
    """An SR model given to the study must have trained on the target's train split only."""
    if not path.is_file():
        raise StudyError(f"SR checkpoint for domain {domain!r} not found: {path}")
    run = load_checkpoint(path, map_location="cpu").get("run_config") or {}
    data = run.get("data")
    if "sr" not in run or not isinstance(data, dict):
        raise StudyError(f"{path} is not a facegan SR checkpoint")
    entry = to_dict(config.domains[domain])
    mismatched = [f for f in _SPLIT_FIELDS if data.get(f, LATER_SOURCE_DEFAULTS.get(f)) != entry.get(f)]
    if Path(str(data.get("root", ""))).resolve() != Path(entry["root"]).resolve():
        mismatched.append("root")
    if data.get("split") != "train":
        mismatched.append("split")
    if mismatched:
        raise StudyError(
            f"SR checkpoint {path} was not trained on the train split of domain {domain!r} as this study splits it "
            f"(differs in: {', '.join(mismatched)}); its training faces could include this study's test people. Leave "
            f"sr.{domain}.checkpoint empty to let the study train one, or split the domain as that checkpoint did")


def prepare_sr_stage(domain: str, config: StudyConfig, out_dir: Path, progress: bool) -> tuple[Path, float]:
    """The SR checkpoint of a target domain, trained here if not given; returns (path, seconds
    spent now: 0 when it was given or cached)."""
    from engine.presets import resolve_preset
    from gan.sr.config import SRRunConfig
    from gan.sr.train import train as train_sr

    stage = config.sr.get(domain)
    if stage is not None and stage.checkpoint:
        path = Path(stage.checkpoint)
        _check_sr_checkpoint(path, domain, config)
        return path, 0.0
    preset = stage.config if stage is not None else SRStageConfig().config
    overrides = list(stage.overrides) if stage is not None else []
    sr_config = load_config(SRRunConfig, resolve_preset(preset, "gan.sr") if preset else None, overrides)
    entry = to_dict(config.domains[domain])
    data = to_dict(sr_config.data)
    for key in data:
        if key in entry:
            data[key] = entry[key]
    data["split"] = "train"
    data["eval_split"] = "val"
    from engine.config import from_dict
    from gan.sr.config import SRDataConfig

    sr_config.data = from_dict(SRDataConfig, data)
    if sr_config.sr.model.output_size != config.model.trunk.input_size:
        log.warning("the SR model of %s outputs %d px; its faces are resized to the study's %d px",
                    domain, sr_config.sr.model.output_size, config.model.trunk.input_size)
    # "train" is the name facegan 0.1 gave the trainer section: kept, so that cached stages stay valid.
    fingerprint = config_fingerprint({"sr": to_dict(sr_config.sr), "data": without_later_defaults(data, LATER_SOURCE_DEFAULTS),
                                      "train": {k: v for k, v in to_dict(sr_config.trainer).items() if k != "out_dir"}})
    folder = out_dir / "stages" / f"sr-{domain}-{fingerprint}"
    done = folder / "stage.json"
    if done.is_file():
        return Path(json.loads(done.read_text())["checkpoint"]), 0.0
    sr_config.trainer.out_dir = str(folder)
    sr_config.trainer.progress = progress
    if config.budget.threads:
        sr_config.trainer.threads = config.budget.threads
    sr_config.trainer.resume = "auto"
    log.info("SR stage for %s: training %s in %s", domain, preset, folder)
    start = time.perf_counter()
    train_sr(sr_config)
    seconds = time.perf_counter() - start
    checkpoint = folder / "checkpoints" / "best.pt"
    if not checkpoint.is_file():
        checkpoint = folder / "checkpoints" / "latest.pt"
    atomic_write_text(done, json.dumps({"checkpoint": str(checkpoint), "seconds": seconds, "preset": preset,
                                        "overrides": overrides}, indent=2))
    return checkpoint, seconds


# ------------------------------------------------------------------------------------------
# Cells
# ------------------------------------------------------------------------------------------
# Fields that shared configs gained after studies had cached cells, with their defaults. Left
# out of a cell's fingerprint while at the default, so that those cells stay valid.
_LATER_DEFAULTS = {"channels": [], "identity": False, "age_groups": [], "schedule_follows_clock": False,
                   **LATER_SOURCE_DEFAULTS}


def _without_later_defaults(data):
    return without_later_defaults(data, _LATER_DEFAULTS)


def _cell_fingerprint(recipe: Recipe, seed: int, config: StudyConfig, sr_checkpoints: dict[str, Path],
                      legacy: bool = False) -> str:
    """Everything the cell's model depends on. `legacy`: the scheme before 2026-11-25, which
    took every study option, so that a change of, say, the colour mode retrained every arm."""
    sr = {}
    for domain in recipe.needs_sr:
        path = sr_checkpoints[domain]
        stat = path.stat()
        sr[domain] = [str(path), stat.st_size, int(stat.st_mtime)]
    return config_fingerprint({
        "recipe": recipe.key(), "seed": seed, "model": _without_later_defaults(to_dict(config.model)),
        "optim": _without_later_defaults(to_dict(config.optim)),
        "budget": {k: v for k, v in to_dict(config.budget).items() if k not in ("threads", "device")},
        "tasks": config.tasks, "domains": {d: _without_later_defaults(to_dict(e)) for d, e in config.domains.items()},
        "options": (without_later_defaults(to_dict(config.options), {"adapt": to_dict(AdaptationConfig())}) if legacy
                    else recipe.options_used(config.options)), "sr": sr,
    })


def _cell_folder(recipe: Recipe, seed: int, fingerprint: str, out_dir: Path) -> Path:
    """`<arm>-s<seed>-<fingerprint>`, or the folder already holding that fingerprint's cell under
    another arm's name (the first phase of self-training, say, is found by its fingerprint)."""
    existing = sorted((out_dir / "cells").glob(f"*-s{seed}-{fingerprint}"))
    return existing[0] if existing else out_dir / "cells" / f"{recipe.arm}-s{seed}-{fingerprint}"


def _adopt_legacy_cell(recipe: Recipe, seed: int, config: StudyConfig, sr_checkpoints: dict[str, Path],
                       folder: Path) -> None:
    """A cell cached under the legacy fingerprint of this same config is this cell: rename it,
    so that studies run before the change keep their trainings."""
    if folder.exists():
        return
    legacy = _cell_folder(recipe, seed, _cell_fingerprint(recipe, seed, config, sr_checkpoints, legacy=True),
                          folder.parent.parent)
    if legacy.is_dir() and legacy != folder:
        log.info("cell %s: adopting %s (cached under the fingerprint of every study option)", folder.name, legacy.name)
        legacy.rename(folder)


def cell_run_config(cell: Cell, config: StudyConfig, progress: bool = True) -> AttributeRunConfig:
    """The attribute run a cell is: its recipe's domains with the study's tasks (every task head
    shared across them, plain softmax unless the recipe asks for SA-softmax), the study's model
    and optimiser, and its budget."""
    recipe, budget = cell.recipe, config.budget
    steps = recipe.adapt_steps if recipe.adapt else (recipe.steps or budget.steps)
    model = replace(config.model, head=replace(config.model.head, share_tasks=list(config.tasks),
                                                 sa_softmax=recipe.sa_softmax))
    options = config.options.adapt
    # The SA schedule only where an SA head trains: every other cell keeps the run record it had.
    sa = SAConfig(plain_epochs=options.sa_plain_epochs, window_epochs=options.sa_window_epochs) if recipe.sa_softmax else SAConfig()
    trainer = TrainerConfig(
        out_dir=str(cell.folder), max_steps=steps, batch_size=recipe.batch_size, seed=cell.seed,
        ema_decay=budget.ema_decay, ema_modules=("model",), eval_every=0, sample_every=0,
        checkpoint_every=max(50, steps // 4), log_every=max(1, min(20, steps // 10)),
        threads=budget.threads or None, device=budget.device, progress=progress,
        resume="auto",
    )
    datasets = {name: replace(config.domains[name], tasks=list(config.tasks)) for name, _ in recipe.train}
    init = str(cell.previous.folder / "checkpoints" / "latest.pt") if recipe.adapt and cell.previous is not None else ""
    return AttributeRunConfig(datasets=datasets, model=model, optim=config.optim, init_weights=init, sa=sa,
                              eval=EvalConfig(flip_tta=True, calibrate_thresholds=False), trainer=trainer)


def _train_cell(cell: Cell, config: StudyConfig, sets: FaceSets, progress: bool) -> None:
    """Train a cell with the attribute trainer: its checkpoints open in `attributes eval` and
    `predict` like any attribute model's. An adapting cell's phase starts from the previous
    cell's model and sees the target faces without labels."""
    recipe = cell.recipe
    data = {name: DatasetSplits(name, sets.get(faces), None, None, sets.get(faces).schema) for name, faces in recipe.train}
    unlabelled = {f"unlabelled{i}:{faces.split('/')[0]}": sets.get(faces) for i, faces in enumerate(recipe.unlabelled)}
    make_step = None
    steps: list = []  # the step, kept to read an adaptation's record after training
    head = recipe.train[0][0]
    if recipe.domain_adversarial:
        def make_step(model, train_sets, val_sets, settings):
            from attributes.trunks import feature_shape
            from transfer.dann import DANNStep, DomainClassifier

            channels = feature_shape(model.trunk, model.input_size)[0]
            torch.manual_seed(cell.seed + 1)
            return DANNStep(model, train_sets, val_sets,
                            domain_classifier=DomainClassifier(channels, config.options.dann_hidden),
                            weight=config.options.dann_weight, **settings)
    elif recipe.adapt:
        from transfer.adaptation import SelfTrainStep, TentStep, unlabelled_view

        target = unlabelled_view(sets.get(recipe.target_faces))
        labelled_as = unlabelled_view(sets.get(recipe.label_faces)) if recipe.label_faces else None
        unlabelled = {f"target:{recipe.target}": target}
        options = config.options.adapt

        def make_step(model, train_sets, val_sets, settings):
            if recipe.adapt == "tent":
                step = TentStep(model, train_sets, val_sets, head=head, lr=options.tent_lr, **settings)
            else:
                step = SelfTrainStep(model, train_sets, val_sets, head=head, target_faces=target,
                                     source_val=sets.get(_validation_faces(recipe)), relabel_every=options.relabel_every,
                                     precision=options.precision, strong_color=options.strong_color,
                                     selection="sa_grade" if recipe.sa_softmax else "max_softmax",
                                     balance_classes=options.balance_classes and not recipe.sa_softmax,
                                     strong_erase=options.strong_erase, label_faces=labelled_as, **settings)
            steps.append(step)
            return step
    # What facegan 0.1 recorded for a cell, so that a cell it left unfinished resumes.
    legacy = {"study_cell": recipe.key(), "seed": cell.seed, "fingerprint": cell.fingerprint}
    fit(cell_run_config(cell, config, progress), data, unlabelled=unlabelled, make_step=make_step,
        legacy_run_configs=[legacy])
    if steps and getattr(steps[0], "rounds", None) is not None:
        _write_pseudo_label_record(cell, steps[0].rounds, sets)


def _validation_faces(recipe: Recipe) -> str:
    """The source's validation people in the colours of the recipe's first training set."""
    first = recipe.train[0][1].split("+")[0].strip()
    return first.replace("/train", "/val", 1)


def _write_pseudo_label_record(cell: Cell, rounds: list[dict], sets: FaceSets) -> None:
    """How many target faces each labelling round kept and how many of them were right, against
    the withheld true labels: read here, for the report, after training has ended."""
    truth = sets.get(cell.recipe.target_faces)
    record = []
    for entry in rounds:
        tasks = {}
        for column, task in enumerate(truth.schema.names):
            kept = entry["mask"][:, column]
            known = kept & truth.mask[:, column]
            right = (entry["targets"][:, column] == truth.targets[:, column].round()) & known
            tasks[task] = {"kept": int(kept.sum()), "of": len(truth), "scored": int(known.sum()),
                           "accuracy": float(right.sum() / known.sum()) if known.any() else None,
                           "threshold": entry["thresholds"].get(task)}
        record.append({"step": int(entry["step"]), "tasks": tasks})
    atomic_write_text(cell.folder / "pseudo_labels.json", json.dumps(record, indent=2))


def _adabn_cell(cell: Cell, config: StudyConfig, sets: FaceSets, device: torch.device) -> None:
    """The previous cell's model with its BatchNorm statistics re-estimated on the target's train
    faces, saved as this cell's checkpoint (it opens in `attributes eval` like any other)."""
    from engine.checkpoint import atomic_save
    from transfer.adaptation import adapt_batch_norm, unlabelled_view

    source = cell.previous.folder / "checkpoints" / "latest.pt"
    state = load_checkpoint(source, map_location="cpu")
    model = load_cell_model(cell.previous, config, sets, device)
    adapt_batch_norm(model, unlabelled_view(sets.get(cell.recipe.target_faces)), cell.recipe.train[0][0], device=device)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state["modules"]["model"] = weights
    if "model" in (state.get("ema") or {}):
        state["ema"]["model"] = weights
    atomic_save(state, cell.folder / "checkpoints" / "latest.pt")


def _ensure_trained(cell: Cell, config: StudyConfig, sets: FaceSets, device: torch.device, progress: bool) -> float:
    """Train the cell (and the cells before it) unless done; returns the seconds of training
    behind its model, its previous cells' included."""
    if cell.trained_path.is_file():
        return float(json.loads(cell.trained_path.read_text()).get("seconds_total", 0.0))
    if cell.predictions_path.is_file():  # a cell finished before the trained marker existed
        meta = cell.folder / "cell.json"
        return float(json.loads(meta.read_text()).get("seconds", 0.0)) if meta.is_file() else 0.0
    before = _ensure_trained(cell.previous, config, sets, device, progress) if cell.previous is not None else 0.0
    cell.folder.mkdir(parents=True, exist_ok=True)
    log.info("cell %s seed %d (%s): training", cell.recipe.arm, cell.seed, cell.folder.name)
    start = time.perf_counter()
    if cell.recipe.adabn:
        _adabn_cell(cell, config, sets, device)
    else:
        _train_cell(cell, config, sets, progress)
    seconds = time.perf_counter() - start
    atomic_write_text(cell.trained_path, json.dumps({"seconds": seconds, "seconds_total": before + seconds}, indent=2))
    return before + seconds


def load_cell_model(cell: Cell, config: StudyConfig, sets: FaceSets, device: torch.device):
    """The cell's trained attribute model (EMA weights), in eval mode."""
    path = cell.folder / "checkpoints" / "latest.pt"
    state = load_checkpoint(path, map_location="cpu")
    if "schemas" in (state.get("run_config") or {}):
        return load_attribute_model(path, device=device).model
    # A cell trained by facegan 0.1 recorded no label schemas: rebuild its model from the study.
    schemas = {name: sets.get(faces).schema for name, faces in cell.recipe.train}
    run = cell_run_config(cell, config)
    model = build_attribute_model(run.model, schemas, {name: list(config.tasks) for name in schemas})
    model.load_state_dict(module_weights(state, "model", where=path)[0])
    return model.to(device).eval()


def _predict_cell(cell: Cell, config: StudyConfig, sets: FaceSets, device: torch.device) -> dict[str, np.ndarray]:
    """Predictions of the cell's EMA model on every domain's test split, as flat arrays."""
    recipe = cell.recipe
    model = load_cell_model(cell, config, sets, device)
    head_dataset = recipe.train[0][0]  # every task head is shared, so any training dataset's name reaches it
    arrays: dict[str, np.ndarray] = {}
    for domain in config.domains:
        faces = sets.get(faces_for_testing(domain, recipe.test_colour))
        predictions = predict_cache(model, faces, head_dataset, batch_size=256, device=device, flip_tta=True)
        for group in model.groups[head_dataset]:
            decoded = predictions[group.name]
            for k, task in enumerate(group.tasks):
                if group.kind is TaskKind.BINARY:
                    prob = decoded["prob"][:, k] if decoded["prob"].dim() == 2 else decoded["prob"]
                    arrays[f"{domain}::{task.name}::prob"] = prob.numpy().astype(np.float32)
                    arrays[f"{domain}::{task.name}::pred"] = (prob >= 0.5).numpy().astype(np.int64)
                else:
                    arrays[f"{domain}::{task.name}::pred"] = decoded["pred"].reshape(-1).numpy().astype(np.int64)
    return arrays


def _run_cell(cell: Cell, config: StudyConfig, sets: FaceSets, device: torch.device, progress: bool) -> dict[str, Any]:
    if cell.predictions_path.is_file():
        with np.load(cell.predictions_path) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads((cell.folder / "cell.json").read_text()) if (cell.folder / "cell.json").is_file() else {}
        return {"arrays": arrays, "seconds": meta.get("seconds", 0.0), "cached": True}
    trained = _ensure_trained(cell, config, sets, device, progress)
    start = time.perf_counter()
    arrays = _predict_cell(cell, config, sets, device)
    seconds = trained + time.perf_counter() - start  # what the arm costs from scratch, its earlier cells included
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_text(cell.folder / "cell.json", json.dumps({"recipe": cell.recipe.key(), "seed": cell.seed,
                                                              "seconds": seconds}, indent=2))
    from engine.checkpoint import atomic_write_bytes

    atomic_write_bytes(cell.predictions_path, buffer.getvalue())  # written last: its presence marks the cell done
    return {"arrays": arrays, "seconds": seconds, "cached": False}


# ------------------------------------------------------------------------------------------
# The study
# ------------------------------------------------------------------------------------------
def plan_cells(config: StudyConfig, recipes: dict[tuple[str, str, str], Recipe], sr_checkpoints: dict[str, Path],
               out_dir: Path) -> tuple[dict[str, Cell], dict[tuple[str, str, str], list[str]]]:
    """Every distinct cell the arms need (the earlier cells of adapting recipes too), by
    fingerprint, and for each (source, target, arm) the fingerprints of its seeds' cells."""
    cells: dict[str, Cell] = {}

    def cell_of(recipe: Recipe, seed: int) -> Cell:
        fingerprint = _cell_fingerprint(recipe, seed, config, sr_checkpoints)
        if fingerprint not in cells:
            previous = recipe.previous()
            before = cell_of(previous, seed) if previous is not None else None
            folder = _cell_folder(recipe, seed, fingerprint, out_dir)
            _adopt_legacy_cell(recipe, seed, config, sr_checkpoints, folder)
            cells[fingerprint] = Cell(recipe, seed, fingerprint, folder, before)
        return cells[fingerprint]

    assignment: dict[tuple[str, str, str], list[str]] = {}
    for key, recipe in recipes.items():
        for seed in config.seeds:
            assignment.setdefault(key, []).append(cell_of(recipe, seed).fingerprint)
    return cells, assignment


def run_study(config: StudyConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the study of `config`; returns the results written to results.json."""
    from transfer.analysis import analyse, sentences
    from transfer.study_report import write_study_report

    directions = validate(config)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _settle_locations(config, out_dir)
    atomic_write_text(out_dir / "study.yaml", __import__("yaml").safe_dump(to_dict(config), sort_keys=False))
    configure_threads(config.budget.threads or None)
    device = choose_device(config.budget.device)
    sets = FaceSets(config, out_dir, progress=progress, device=device)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    for domain in config.domains:
        sets.domain_splits(domain)
    timings["align_and_cache"] = time.perf_counter() - start

    recipes = {(s, t, arm): recipe_for(arm, s, t, config) for s, t in directions for arm in config.arms}
    sr_needed = sorted({d for r in recipes.values() for d in r.needs_sr})
    sr_seconds: dict[str, float] = {}
    for domain in sr_needed:
        sets.sr_checkpoints[domain], sr_seconds[domain] = prepare_sr_stage(domain, config, out_dir, progress)

    cells, assignment = plan_cells(config, recipes, sets.sr_checkpoints, out_dir)
    arm_cells = {f for fingerprints in assignment.values() for f in fingerprints}
    log.info("%d arm x direction x seed combinations need %d distinct trainings", sum(map(len, assignment.values())), len(cells))

    start = time.perf_counter()
    face_sets_start = start
    outputs: dict[str, dict[str, Any]] = {}
    for fingerprint, cell in cells.items():
        if fingerprint in arm_cells:
            outputs[fingerprint] = _run_cell(cell, config, sets, device, progress)
    timings["cells"] = time.perf_counter() - face_sets_start
    timings["cells_trained_now"] = sum(o["seconds"] for o in outputs.values() if not o["cached"])

    results = analyse(config, directions, recipes, assignment, outputs, sets)
    results["summary"] = [line for task, per_direction in results["tasks"].items()
                          for direction in per_direction.values() for line in sentences(direction, task)]
    results["timings"] = {**timings, "sr_stages": sr_seconds,
                          "cell_seconds": {cells[f].folder.name: round(o["seconds"], 1) for f, o in outputs.items()},
                          "arm_seconds": {f"{arm} {s}->{t}": round(float(np.mean([outputs[f]["seconds"] for f in fps])), 1)
                                          for (s, t, arm), fps in assignment.items()}}
    results["pseudo_labels"] = _pseudo_label_records(assignment, cells)
    results["sr_checkpoints"] = {d: str(p) for d, p in sets.sr_checkpoints.items()}
    if config.domain_gap_faces > 0 and sets.sr_checkpoints:
        from transfer.domain_gap import measure_domain_gap

        start = time.perf_counter()
        models = {(s, t): load_cell_model(cells[assignment[(s, t, "source_only")][0]], config, sets, device)
                  for s, t in directions}
        template = next(iter(config.domains.values())).template
        results["domain_gap"] = measure_domain_gap(directions, sets, models, template, config.domain_gap_faces,
                                                   config.domain_gap_embedded_faces, cache_dir=out_dir / "domain_gap")
        results["timings"]["domain_gap"] = time.perf_counter() - start
    write_study_report(config, results, sets, out_dir)
    return results


def _pseudo_label_records(assignment: dict[tuple[str, str, str], list[str]], cells: dict[str, Cell]) -> dict[str, Any]:
    """Per direction and self-training arm, each seed's labelling rounds (kept faces, their accuracy
    against the withheld labels), from the cell of its self-training stage."""
    records: dict[str, Any] = {}
    for (s, t, arm), fingerprints in assignment.items():
        per_seed = []
        for fingerprint in fingerprints:
            cell = cells[fingerprint]
            # The self-training stage itself: an arm ending in AdaBN keeps `adapt` on its last
            # cell, which only re-estimates statistics and labels nothing.
            while cell is not None and (cell.recipe.adapt != "self_train" or cell.recipe.adabn):
                cell = cell.previous
            path = cell.folder / "pseudo_labels.json" if cell is not None else None
            if path is not None and path.is_file():
                per_seed.append({"seed": cell.seed, "rounds": json.loads(path.read_text())})
        if per_seed:
            records.setdefault(f"{s}->{t}", {})[arm] = per_seed
    return records


def _settle_locations(config: StudyConfig, out_dir: Path) -> None:
    """Give every domain a fixed folder and cache folder, so that the SR stages read the very
    faces, splits and cache the cells do. A rerun in the same study folder keeps the locations
    its study.yaml recorded where they are the same folders, and the cache folders the config
    leaves open: cached stages and cells are named by fingerprints that include them."""
    size = config.model.trunk.input_size
    previous = _recorded_domains(out_dir)
    for name, entry in config.domains.items():
        before = previous.get(name) or {}
        if not entry.root:
            entry.root = str(out_dir / "data" / "synthetic") if entry.source == "synthetic" else str(source_root(entry))
        old_root = str(before.get("root") or "")
        if old_root and old_root != entry.root and Path(old_root).resolve() == Path(entry.root).resolve():
            entry.root = old_root
        if not entry.cache_dir:
            entry.cache_dir = str(before.get("cache_dir") or out_dir / "cache" / f"{name}-{size}")


def _recorded_domains(out_dir: Path) -> dict:
    """The domains of the study.yaml an earlier run wrote in `out_dir` ({} when there is none)."""
    import yaml

    path = out_dir / "study.yaml"
    try:
        recorded = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return {}
    domains = recorded.get("domains") if isinstance(recorded, dict) else None
    return domains if isinstance(domains, dict) else {}


def plan_study(config: StudyConfig) -> dict[str, list[str]]:
    """The distinct trainings a study needs (by recipe), each with the arm x direction pairs it serves."""
    distinct: dict[str, list[str]] = {}
    for s, t in validate(config):
        for arm in config.arms:
            recipe = recipe_for(arm, s, t, config)
            distinct.setdefault(str(recipe.key()), []).append(f"{arm} {s}->{t}")
            previous = recipe.previous()
            while previous is not None:  # an adapting arm's earlier stages: each its own cell
                distinct.setdefault(str(previous.key()), []).append(f"{previous.arm} {s}->{t} (an earlier stage of {arm})")
                previous = previous.previous()
    return distinct


def check_config(config: StudyConfig) -> None:
    """Validation without running, for `--dry-run`."""
    try:
        validate(config)
    except ConfigError as exc:
        raise StudyError(str(exc)) from exc
