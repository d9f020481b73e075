"""Building an attribute run from its config, running it on the engine Trainer, and loading it back."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attributes.config import ALL_FACES, AttributeRunConfig, DatasetEntry
from attributes.inference import binary_validation, predict_cache, threshold_key
from attributes.model import AttributeEnsemble, AttributeModel, ModelConfig, build_attribute_model
from attributes.multidataset import ParallelDatasets, SamplerConfig, balancing_weights
from attributes.step import AttributeStep
from data_prep.datasets.schema import LabelSchema, TaskKind
from data_prep.sources import aligned_cache, open_source
from engine.checkpoint import atomic_save, load_checkpoint
from engine.config import from_dict, to_dict
from engine.device import choose_device
from engine.errors import FaceganError
from engine.trainer import Trainer

__all__ = ["DatasetSplits", "prepare_datasets", "train", "load_attribute_model", "LoadedModel", "member_dir", "single_network"]

log = logging.getLogger(__name__)


@dataclass
class DatasetSplits:
    name: str
    train: Any  # AlignedFaceCache views
    val: Any
    test: Any
    schema: LabelSchema


def _dedupe(dataset):
    if not any(r.meta and "duplicate_group" in r.meta for r in dataset.records):
        return dataset
    from data_prep.datasets.utkface import deduplicate

    return dataset.with_records(deduplicate(dataset.records, drop_conflicting=True))


def _split_views(cache, train_split: str):
    """The (train, val, test) views of `cache`. With train_split "all" every face trains and
    nothing is held out, since validating on training faces would mislead."""
    if train_split == ALL_FACES:
        nothing = cache.subset(keep=lambda record: False)
        return cache.subset(), nothing, nothing
    return cache.subset(split=train_split), cache.subset(split="val"), cache.subset(split="test")


def prepare_datasets(datasets: dict[str, DatasetEntry], size: int, out_dir: str | Path, progress: bool = True) -> dict[str, DatasetSplits]:
    """Open, align and cache every dataset; split each into train/val/test views."""
    prepared = {}
    for name, entry in datasets.items():
        dataset = open_source(entry, out_dir, min_image_size=size)
        if entry.dedupe:
            dataset = _dedupe(dataset)
        cache = aligned_cache(dataset, entry, size, Path(out_dir), progress=progress)
        train_view = _split_views(cache, entry.train_split)[0]
        if len(train_view) == 0:
            raise FaceganError(f"dataset {name!r} ({entry.source}) has no faces in split {entry.train_split!r}")
        if entry.identity:
            people = sorted(train_view.identities())
            if len(people) < 2:
                raise FaceganError(f"dataset {name!r}: an identity task needs at least 2 people in split "
                                   f"{entry.train_split!r}, found {len(people)} (does {entry.source} have identities?)")
            cache = cache.with_identity_task(people)
        prepared[name] = DatasetSplits(name, *_split_views(cache, entry.train_split), cache.schema)
        log.info("%s: train %d, val %d, test %d faces", name, len(prepared[name].train), len(prepared[name].val),
                 len(prepared[name].test))
    return prepared


def _run_config_dict(config: AttributeRunConfig, schemas: dict[str, LabelSchema]) -> dict:
    data = to_dict(config)
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
        return _train_ensemble(config, progress)
    trainer_config = config.trainer
    out_dir = Path(trainer_config.out_dir)
    size = config.model.trunk.input_size
    data = prepare_datasets(config.datasets, size, work_dir or out_dir, progress=progress)
    schemas = {name: splits.schema for name, splits in data.items()}
    tasks = {name: entry.learned_tasks() for name, entry in config.datasets.items()}
    torch.manual_seed(trainer_config.seed)  # the model's initial weights
    model = build_attribute_model(config.model, schemas, tasks)
    if config.init_weights:
        _load_initial_weights(model, config.init_weights)
    step_class, extra = AttributeStep, {}
    if config.distill.teacher:
        from attributes.distill import DistillStep

        step_class = DistillStep
        extra = {"teacher": load_attribute_model(config.distill.teacher).model, "distill": config.distill}
    step = step_class(
        model, {n: d.train for n, d in data.items()}, {n: d.val for n, d in data.items()},
        batch_size=trainer_config.batch_size, max_steps=trainer_config.max_steps, optim=config.optim,
        loss=config.loss, sa=config.sa, augment=config.augment, flip_tta=config.eval.flip_tta,
        calibrate_thresholds=config.eval.calibrate_thresholds, eval_batch_size=config.eval.batch_size,
        slim=config.slim, **extra,
    )
    if config.model.head.pos_weight:
        step.set_pos_weights()
    parallel = ParallelDatasets({n: d.train for n, d in data.items()}, seed=trainer_config.seed,
                                weights=sampling_weights(config.sampler, model, {n: d.train for n, d in data.items()}))
    trainer = Trainer(step, parallel, trainer_config, run_config=_run_config_dict(config, schemas))
    result = trainer.fit()
    result["out_dir"] = str(out_dir)
    result["datasets"] = {n: {"train": len(d.train), "val": len(d.val), "test": len(d.test)} for n, d in data.items()}
    return result


def member_dir(out_dir: str | Path, k: int) -> Path:
    """Where member `k` of an ensemble run in `out_dir` trains: a complete run of its own."""
    return Path(out_dir) / "members" / str(k)


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
        member.trainer.seed = config.trainer.seed + k
        member.trainer.out_dir = str(member_dir(out_dir, k))
        started = (member_dir(out_dir, k) / "checkpoints" / "latest.pt").is_file()
        member.trainer.resume = config.trainer.resume and started
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
    run_config = _run_config_dict(config, {name: splits.schema for name, splits in data.items()})
    checkpoint = {"format": "attribute-ensemble", "members": members, "run_config": run_config,
                  "global_step": min(m["global_step"] for m in members), "step_state": {"thresholds": {}}}
    device = choose_device(config.trainer.device)
    model = _ensemble_from(*_run_of(checkpoint, path), members, use_ema=True).to(device)
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
    weights = (state.get("ema") or {}).get("model") or (state.get("modules") or {}).get("model")
    if weights is None:
        raise FaceganError(f"init_weights: {file} holds no attribute model")
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


@dataclass
class LoadedModel:
    model: AttributeModel | AttributeEnsemble
    config: AttributeRunConfig
    thresholds: dict[str, torch.Tensor]
    step: int
    path: Path


def load_attribute_model(checkpoint: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained attribute model (EMA weights by default) from a checkpoint; an ensemble
    checkpoint (`members: K`) gives an `AttributeEnsemble`."""
    path = Path(checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    config, schemas = _run_of(state, path)
    if state.get("format") == "attribute-ensemble":
        model = _ensemble_from(config, schemas, state["members"], use_ema)
    else:
        weights = state["ema"].get("model") if use_ema and state.get("ema") else None
        model = _network(config, schemas, weights if weights is not None else state["modules"]["model"])
    model.to(device).eval()
    thresholds = dict(state.get("step_state", {}).get("thresholds", {}))
    return LoadedModel(model, config, thresholds, int(state.get("global_step", 0)), path)


def single_network(loaded: LoadedModel, tool: str) -> AttributeModel:
    """`loaded.model` for a tool that reaches inside one network; an ensemble is refused with
    the member checkpoint to give instead."""
    if isinstance(loaded.model, AttributeEnsemble):
        member = member_dir(loaded.path.parent.parent, 0) / "checkpoints" / loaded.path.name
        raise FaceganError(f"{loaded.path} is an ensemble of {len(loaded.model.members)} networks, and {tool} works on one: "
                           f"give it a member's checkpoint, such as {member}")
    return loaded.model


def _run_of(state: dict, path: Path) -> tuple[AttributeRunConfig, dict[str, LabelSchema]]:
    """The run config and label schemas a checkpoint was trained with."""
    run = dict(state.get("run_config") or {})
    if "schemas" not in run or "model" not in run:
        raise FaceganError(f"{path} is not an attribute-model checkpoint (no schemas / model config in it)")
    schemas = {name: LabelSchema.from_dict(s) for name, s in run.pop("schemas").items()}
    config = from_dict(AttributeRunConfig, run)
    config.model.trunk.checkpoint = ""  # the weights come from this checkpoint, not the starting point
    return config, schemas


def _network(config: AttributeRunConfig, schemas: dict[str, LabelSchema], weights: dict) -> AttributeModel:
    tasks = {name: entry.learned_tasks() for name, entry in config.datasets.items()}
    model = build_attribute_model(config.model, schemas, tasks)
    model.load_state_dict(weights)
    return model


def _ensemble_from(config: AttributeRunConfig, schemas: dict[str, LabelSchema], members: list[dict],
                   use_ema: bool) -> AttributeEnsemble:
    return AttributeEnsemble([
        _network(config, schemas, member["ema"] if use_ema and member.get("ema") is not None else member["modules"])
        for member in members
    ]).eval()


def model_config_of(config: AttributeRunConfig) -> ModelConfig:
    return config.model
