"""The configuration of an attribute run: one dataclass tree, presets in presets/*.yaml."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from attributes.distill import DistillConfig
from attributes.model import ModelConfig
from attributes.multidataset import SamplerConfig
from attributes.slimming import SlimConfig
from attributes.step import AugmentConfig, LossConfig, OptimConfig, SAConfig
from data_prep.datasets.record import SPLITS
from data_prep.sources import SourceConfig
from engine.config import ConfigError
from engine.errors import FaceganError
from engine.trainer import TrainerConfig

__all__ = ["ALL_FACES", "DatasetEntry", "EvalConfig", "AttributeRunConfig", "default_trainer", "add_datasets", "member_dir"]


ALL_FACES = "all"  # DatasetEntry.train_split that trains on every face of a dataset


@dataclass
class DatasetEntry(SourceConfig):
    """One training dataset: where it is (see `data_prep.sources.SourceConfig`) and what to learn."""

    tasks: list[str] = field(default_factory=list)  # task names to learn (empty: every task of its schema)
    # The split trained on; validation uses "val", evaluation "test". "all": every face, for a final
    # model whose evaluation faces are elsewhere; it then has no validation and no test split.
    train_split: str = "train"
    dedupe: bool = True  # drop exact-duplicate images (UTKFace has byte-identical copies with conflicting ages)
    identity: bool = False  # add a face-identity task ("Identity"): one class per person of the training split

    def __post_init__(self) -> None:
        if self.train_split not in (*SPLITS, ALL_FACES):
            raise ConfigError(f"train_split must be one of {', '.join(SPLITS)} or {ALL_FACES}, not {self.train_split!r}")

    def learned_tasks(self) -> list[str]:
        """`tasks` as the model plans them (empty: every task), with the identity task when asked."""
        from data_prep.cache import IDENTITY_TASK

        if self.identity and self.tasks and IDENTITY_TASK not in self.tasks:
            return [*self.tasks, IDENTITY_TASK]
        return list(self.tasks)


@dataclass
class EvalConfig:
    flip_tta: bool = True  # average predictions over the image and its mirror
    calibrate_thresholds: bool = True  # choose each binary attribute's threshold on the validation people
    batch_size: int = 256


def default_trainer() -> TrainerConfig:
    return TrainerConfig(out_dir="runs/attributes", max_steps=2000, batch_size=64, ema_decay=0.999,
                         ema_modules=("model",), eval_every=500, checkpoint_every=500, sample_every=0,
                         best_metric="score", best_mode="max", log_every=20)


@dataclass
class AttributeRunConfig:
    # dataset name -> entry; empty: the built-in synthetic faces
    datasets: dict[str, DatasetEntry] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sa: SAConfig = field(default_factory=SAConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    slim: SlimConfig = field(default_factory=SlimConfig)  # L1 on the trunk's BN scales, for `attributes prune`
    init_weights: str = ""  # a checkpoint whose whole model (EMA weights when present) starts this run; same architecture
    distill: DistillConfig = field(default_factory=DistillConfig)  # learn from a teacher's outputs too (`attributes distill`)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=default_trainer)  # batch_size = images per dataset per step
    # Independently trained copies averaged into one model (attributes.model.AttributeEnsemble):
    # member k trains with seed trainer.seed + k into OUT/members/k, on trainer.max_steps steps
    # (and trainer.max_seconds) of its own; OUT/checkpoints/{latest,best}.pt hold them all.
    members: int = 1

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ConfigError(f"members must be at least 1, not {self.members}")


def add_datasets(config: AttributeRunConfig, specs: list[str], identity: bool = False) -> AttributeRunConfig:
    """Add training datasets given as NAME or NAME=ROOT (the --dataset option; NAME is a data_prep
    source, and ROOT its folder); with `identity`, every dataset also learns its people."""
    for item in specs:
        name, _, root = item.partition("=")
        name = name.strip()
        if not name:
            raise FaceganError(f"--dataset {item!r}: expected NAME or NAME=ROOT")
        entry = config.datasets.get(name) or DatasetEntry(source=name)
        if root:
            entry.root = root
        config.datasets[name] = entry
    if identity:
        if not config.datasets:
            config.datasets["synthetic"] = DatasetEntry()
        for entry in config.datasets.values():
            entry.identity = True
    return config


def member_dir(out_dir: str | Path, k: int) -> Path:
    """Where member `k` of an ensemble run in `out_dir` trains: a complete run of its own."""
    return Path(out_dir) / "members" / str(k)
