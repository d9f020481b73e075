"""Building an attribute run from its config, running it on the engine Trainer, and loading it back."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attributes.config import ALL_FACES, AttributeRunConfig, DatasetEntry
from attributes.model import AttributeModel, ModelConfig, build_attribute_model
from attributes.multidataset import ParallelDatasets, SamplerConfig, balancing_weights
from attributes.step import AttributeStep
from data_prep.datasets.schema import LabelSchema, TaskKind
from data_prep.sources import aligned_cache, open_source
from engine.checkpoint import load_checkpoint
from engine.config import from_dict, to_dict
from engine.errors import FaceganError
from engine.trainer import Trainer

__all__ = ["DatasetSplits", "prepare_datasets", "train", "load_attribute_model", "LoadedModel"]

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


def train(config: AttributeRunConfig, progress: bool = True) -> dict:
    """Train the model of `config` and return the Trainer's summary plus the output folder."""
    if not config.datasets:
        config.datasets = {"synthetic": DatasetEntry()}
    trainer_config = config.trainer
    out_dir = Path(trainer_config.out_dir)
    size = config.model.trunk.input_size
    data = prepare_datasets(config.datasets, size, out_dir, progress=progress)
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
    model: AttributeModel
    config: AttributeRunConfig
    thresholds: dict[str, torch.Tensor]
    step: int
    path: Path


def load_attribute_model(checkpoint: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained attribute model (EMA weights by default) from a checkpoint."""
    path = Path(checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    run = dict(state.get("run_config") or {})
    if "schemas" not in run or "model" not in run:
        raise FaceganError(f"{path} is not an attribute-model checkpoint (no schemas / model config in it)")
    schemas = {name: LabelSchema.from_dict(s) for name, s in run.pop("schemas").items()}
    config = from_dict(AttributeRunConfig, run)
    model_config = config.model
    model_config.trunk.checkpoint = ""  # the weights come from this checkpoint, not the starting point
    tasks = {name: entry.learned_tasks() for name, entry in config.datasets.items()}
    model = build_attribute_model(model_config, schemas, tasks)
    weights = state["ema"].get("model") if use_ema and state.get("ema") else None
    model.load_state_dict(weights if weights is not None else state["modules"]["model"])
    model.to(device).eval()
    thresholds = dict(state.get("step_state", {}).get("thresholds", {}))
    return LoadedModel(model, config, thresholds, int(state.get("global_step", 0)), path)


def model_config_of(config: AttributeRunConfig) -> ModelConfig:
    return config.model
