"""Training an attribute model: config -> aligned faces -> model -> step -> the engine's Trainer.

`train(config)` is what `facegan attributes train` runs: it prepares every dataset of the config
(`attributes.data`), then `fit`s one model, or trains the members of an ensemble one after
another and averages them into one checkpoint. `fit` is the one place an attribute model is
assembled, for `train` and for callers that bring their own face sets (the cross-domain study's
cells, with unlabelled faces and their own step), so that every attribute checkpoint records its
run config and label schemas and opens in `attributes eval` and `predict`.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from attributes.config import AttributeRunConfig, DatasetEntry, member_dir
from attributes.data import DatasetSplits, prepare_datasets
from attributes.inference import binary_validation, ensemble_from, predict_cache, run_of, threshold_key
from attributes.model import AttributeModel, build_attribute_model
from attributes.multidataset import ParallelDatasets, SamplerConfig, balancing_weights
from attributes.step import AttributeStep, DistillStep
from data_prep.datasets.schema import LabelSchema, TaskKind
from data_prep.sources import LATER_SOURCE_DEFAULTS
from engine.checkpoint import atomic_save, load_checkpoint, module_weights
from engine.config import save_config, to_dict, without_later_defaults
from engine.deprecation import moved_names
from engine.device import choose_device
from engine.errors import FaceganError
from engine.trainer import ResumeError, Trainer, check_run_folder, checkpoint_files

__all__ = ["train", "fit", "run_record", "sampling_weights"]

log = logging.getLogger(__name__)

# Names that lived here in facegan 0.1.
__getattr__ = moved_names(__name__, {
    "DatasetSplits": "attributes.data", "prepare_datasets": "attributes.data", "member_dir": "attributes.config",
    "load_attribute_model": "attributes.inference", "LoadedModel": "attributes.inference",
    "single_network": "attributes.inference",
})

# (model, train sets, validation sets, the step's settings) -> a Step with a caller's own training maths
StepFactory = Callable[[AttributeModel, dict[str, Any], dict[str, Any], dict[str, Any]], Any]


# Options added after runs were recorded, at their defaults: left out of run records, so that those
# runs keep their fingerprints and resume (tests/attributes/test_legacy.py).
LATER_RUN_DEFAULTS = {"age_groups": [], "label_smoothing": 0.0, "method": "tags", "gamblers_reward": 0.6,
                      "schedule_follows_clock": False, "member_trunk_checkpoints": [],
                      **LATER_SOURCE_DEFAULTS}


def run_record(config: AttributeRunConfig, schemas: dict[str, LabelSchema]) -> dict:
    """What a checkpoint records of the run: the config without its trainer section, and the
    label schemas the heads were built for."""
    data = without_later_defaults(to_dict(config), LATER_RUN_DEFAULTS)
    data.pop("trainer")
    data["schemas"] = {name: schema.to_dict() for name, schema in schemas.items()}
    return data


def train(config: AttributeRunConfig, progress: bool = True, work_dir: str | Path | None = None) -> dict:
    """Train the model of `config` and return the Trainer's summary plus the output folder.

    Datasets without a root or cache_dir of their own are generated and cached under `work_dir`
    (default: the run's folder), which lets an ensemble's members share one aligned cache."""
    if not config.datasets:
        config.datasets = {"synthetic": DatasetEntry()}
    if config.members > 1:
        member_checkpoints = Path(config.trainer.out_dir).glob("members/*/checkpoints/*.pt")
        if not config.trainer.resume and any(path.exists() for path in member_checkpoints):
            raise ResumeError(f"{config.trainer.out_dir} holds an earlier ensemble's members; continue it with --resume, "
                              "or give another --out")
    else:
        check_run_folder(config.trainer)  # before any face is aligned
    out_dir = Path(config.trainer.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    if config.members > 1:
        return _train_ensemble(config, progress)
    data = prepare_datasets(config.datasets, config.model.trunk.input_size, work_dir or out_dir, progress=progress)
    result = fit(config, data)
    result["out_dir"] = str(out_dir)
    result["datasets"] = {n: {"train": len(d.train), "val": len(d.val), "test": len(d.test)} for n, d in data.items()}
    return result


def fit(config: AttributeRunConfig, data: dict[str, DatasetSplits], *, unlabelled: dict[str, Any] | None = None,
        make_step: StepFactory | None = None, legacy_run_configs: Sequence[dict] = ()) -> dict:
    """Build the model of `config` for the labelled face sets of `data` (its initial weights drawn
    from trainer.seed), its step and the Trainer, and run it.

    `unlabelled` face sets pass through the trunk only (for a step that uses them, such as
    domain-adversarial training); `make_step` replaces the attribute step (or the distillation
    step when config.distill.teacher is set); `legacy_run_configs` are what an older facegan
    recorded for this same run, so that its checkpoints resume."""
    trainer_config = config.trainer
    schemas = {name: splits.schema for name, splits in data.items()}
    tasks = {name: config.datasets[name].learned_tasks() for name in data}
    torch.manual_seed(trainer_config.seed)  # the model's initial weights
    model = build_attribute_model(config.model, schemas, tasks)
    if config.init_weights:
        _load_initial_weights(model, config.init_weights)
    labelled = {name: splits.train for name, splits in data.items()}
    train_sets = {**labelled, **(unlabelled or {})}
    val_sets = {name: splits.val for name, splits in data.items() if splits.val is not None}
    settings = dict(
        batch_size=trainer_config.batch_size, max_steps=trainer_config.max_steps, optim=config.optim,
        loss=config.loss, sa=config.sa, augment=config.augment, flip_tta=config.eval.flip_tta,
        calibrate_thresholds=config.eval.calibrate_thresholds, eval_batch_size=config.eval.batch_size,
        slim=config.slim,
    )
    if make_step is not None:
        step = make_step(model, train_sets, val_sets, settings)
    elif config.distill.teacher:
        from attributes.inference import load_attribute_model

        step = DistillStep(model, train_sets, val_sets, teacher=load_attribute_model(config.distill.teacher).model,
                           distill=config.distill, **settings)
    else:
        step = AttributeStep(model, train_sets, val_sets, **settings)
    if config.model.head.pos_weight:
        step.set_pos_weights()
    parallel = ParallelDatasets(train_sets, seed=trainer_config.seed,
                                weights=sampling_weights(config.sampler, model, labelled))
    trainer = Trainer(step, parallel, trainer_config, run_config=run_record(config, schemas),
                      legacy_run_configs=legacy_run_configs)
    return trainer.fit()


def _train_ensemble(config: AttributeRunConfig, progress: bool) -> dict:
    """Train the members one after another, then write the ensemble's checkpoints.

    `--resume` continues the member that was stopped and starts the ones not yet begun; a
    finished member resumes to its end at once. Ctrl-C stops the ensemble with that member and
    writes no ensemble checkpoint; a member's time budget (trainer.max_seconds) ends only that
    member, and the next one starts.
    """
    out_dir = Path(config.trainer.out_dir)
    data = prepare_datasets(config.datasets, config.model.trunk.input_size, out_dir, progress=progress)
    summaries = []
    for k in range(config.members):
        member = copy.deepcopy(config)
        member.members = 1
        if config.member_trunk_checkpoints:
            member.model.trunk.checkpoint = config.member_trunk_checkpoints[k]
            member.member_trunk_checkpoints = []
        member.trainer.seed = config.trainer.seed + k
        member.trainer.out_dir = str(member_dir(out_dir, k))
        started = any(path.exists() for path in checkpoint_files(member_dir(out_dir, k)))
        member.trainer.resume = config.trainer.resume if started else False
        log.info("ensemble member %d of %d (seed %d) in %s", k + 1, config.members, member.trainer.seed, member.trainer.out_dir)
        summary = train(member, progress, work_dir=out_dir)
        summaries.append(summary)
        if summary["status"] == "interrupted":
            log.warning("stopped during member %d; `--resume` continues it and trains the rest", k)
            return {**summary, "out_dir": str(out_dir), "members": summaries}
    written = {}
    for kind in ("latest", "best"):
        paths = [member_dir(out_dir, k) / "checkpoints" / f"{kind}.pt" for k in range(config.members)]
        if all(path.is_file() for path in paths):
            written[kind] = _write_ensemble(config, paths, data, out_dir / "checkpoints" / f"{kind}.pt")
    latest = written["latest"]
    return {
        "status": summaries[-1]["status"], "global_step": latest["global_step"], "metrics": latest["validation"],
        "seconds": sum(s["seconds"] for s in summaries), "checkpoint": str(out_dir / "checkpoints" / "latest.pt"),
        "out_dir": str(out_dir), "datasets": summaries[0]["datasets"], "members": summaries,
        "validation": {kind: w["validation"] for kind, w in written.items()},
    }


def _write_ensemble(config: AttributeRunConfig, member_paths: list[Path], data: dict, path: Path) -> dict:
    """One checkpoint holding every member's weights, with binary thresholds calibrated for the
    averaged outputs on the validation people (when the members calibrate theirs)."""
    states = [load_checkpoint(p) for p in member_paths]
    members = [{"modules": st["modules"]["model"], "ema": (st.get("ema") or {}).get("model"), "global_step": st["global_step"],
                "source": str(p)} for st, p in zip(states, member_paths)]
    run_config = run_record(config, {name: splits.schema for name, splits in data.items()})
    checkpoint = {"format": "attribute-ensemble", "members": members, "run_config": run_config,
                  "global_step": min(m["global_step"] for m in members), "step_state": {"thresholds": {}}}
    device = choose_device(config.trainer.device)
    model = ensemble_from(*run_of(checkpoint, path), members, use_ema=True).to(device)
    validation, thresholds = {}, {}
    for name, splits in data.items():
        if splits.val is None or len(splits.val) == 0:
            continue
        predictions = predict_cache(model, splits.val, name, config.eval.batch_size, device, config.eval.flip_tta)
        for group in model.groups[name]:
            t, m = splits.val.targets[:, group.columns], splits.val.mask[:, group.columns]
            if group.kind is not TaskKind.BINARY or not m.any():
                continue
            _, metrics, chosen = binary_validation(name, group.name, predictions[group.name]["prob"], t, m,
                                                   config.eval.calibrate_thresholds)
            validation.update(metrics)
            if chosen is not None:
                thresholds[threshold_key(name, group.name)] = chosen
    checkpoint["step_state"]["thresholds"] = thresholds
    checkpoint["validation"] = validation
    atomic_save(checkpoint, path)
    log.info("ensemble of %d members -> %s%s", len(members), path,
             "; validation " + ", ".join(f"{k}={v:.4f}" for k, v in validation.items()) if validation else "")
    return {"global_step": checkpoint["global_step"], "validation": validation}


def _load_initial_weights(model: AttributeModel, path: str) -> None:
    """Start from a checkpoint's whole model (a pruned model before fine-tuning, say)."""
    file = Path(path)
    if not file.is_file():
        raise FaceganError(f"init_weights: no checkpoint at {file}")
    state = load_checkpoint(file, map_location="cpu")
    if not isinstance(state.get("modules"), dict) or "model" not in state["modules"]:
        raise FaceganError(f"init_weights: {file} holds no attribute model")
    weights, _ = module_weights(state, "model")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise FaceganError(f"init_weights: {file} does not fit this model's architecture ({str(exc).splitlines()[0]})") from None


def sampling_weights(sampler: SamplerConfig, model: AttributeModel, train_sets: dict) -> dict:
    """Each dataset's balanced-sampling weights over its binary and categorical tasks (none: {})."""
    if sampler.balance == "none":
        return {}
    if sampler.balance != "inverse_frequency":
        raise FaceganError(f"sampler.balance must be 'none' or 'inverse_frequency', not {sampler.balance!r}")
    weights = {}
    for name, cache in train_sets.items():
        columns = [c for g in model.groups[name] if g.kind is not TaskKind.REGRESSION for c in g.columns]
        if columns:
            weights[name] = balancing_weights(cache.targets, cache.mask, columns, sampler.power)
    return weights
