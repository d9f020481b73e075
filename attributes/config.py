"""The configuration of an attribute run: one dataclass tree, presets in presets/*.yaml."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from attributes.losses import F_MEASURE_VARIANTS
from attributes.model import ModelConfig
from attributes.multidataset import SamplerConfig
from attributes.slimming import SlimConfig
from data_prep.datasets.record import SPLITS
from data_prep.sources import SourceConfig
from engine.config import ConfigError
from engine.errors import FaceganError
from engine.trainer import TrainerConfig

__all__ = ["ALL_FACES", "DatasetEntry", "OptimConfig", "LossConfig", "SAConfig", "AugmentConfig", "DistillConfig",
           "EvalConfig", "AttributeRunConfig", "default_trainer", "add_datasets", "member_dir"]


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
    # Cut the "Age" regression into ordinal groups at these edges: an "AgeGroup" task with classes
    # [0, e1), [e1, e2), ..., [e_last, max] (e.g. [13, 25, 40, 60]: 0-12, 13-24, 25-39, 40-59, 60+).
    # Empty: none. Name "AgeGroup" in `tasks` to learn the groups instead of the years.
    age_groups: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.train_split not in (*SPLITS, ALL_FACES):
            raise ConfigError(f"train_split must be one of {', '.join(SPLITS)} or {ALL_FACES}, not {self.train_split!r}")
        if any(b <= a for a, b in zip(self.age_groups, self.age_groups[1:])):
            raise ConfigError(f"age_groups must be increasing edges, got {self.age_groups}")

    def learned_tasks(self) -> list[str]:
        """`tasks` as the model plans them (empty: every task), with the identity task when asked."""
        from data_prep.cache import IDENTITY_TASK

        if self.identity and self.tasks and IDENTITY_TASK not in self.tasks:
            return [*self.tasks, IDENTITY_TASK]
        return list(self.tasks)


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9  # sgd only
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine (to min_lr_ratio * lr at max_steps) | constant
    min_lr_ratio: float = 0.02
    schedule_steps: int = 0  # length of the cosine schedule (0: trainer.max_steps); fix it to stop early and resume later
    # With trainer.max_seconds: the cosine ends when the time budget does (or at its steps, if first),
    # so a time-bounded run neither stops part-way down its schedule nor leaves time unused.
    schedule_follows_clock: bool = False

    def __post_init__(self) -> None:
        # Checked here, not when the optimizer is built, so a bad value fails before any data is aligned.
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optim.optimizer must be 'adamw' or 'sgd', not {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"optim.schedule must be 'cosine' or 'constant', not {self.schedule!r}")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.schedule_steps < 0:
            raise ConfigError("optim.weight_decay, optim.warmup_steps and optim.schedule_steps must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class LossConfig:
    weighting: str = "fixed"  # fixed | uncertainty (Kendall et al.: learned log-variances)
    weights: dict[str, float] = field(default_factory=dict)  # "dataset" or "dataset/group" -> weight (default 1)
    # per_task: each head's loss is its mean over the faces labelled for it, so a head labelled on
    # 5 faces of a batch of 64 weighs as much as one labelled on all 64 (each of its labels ~13x).
    # by_coverage: that mean times the labelled share of the batch, so every label weighs the same.
    sparse_labels: str = "per_task"  # per_task | by_coverage
    # Label smoothing of the plain binary and class heads (Szegedy et al. 2016): a binary
    # attribute trains towards 1 - s/2 and s/2 instead of 1 and 0 (0: off).
    label_smoothing: float = 0.0
    # Joint supervision (attributes/losses.py): each term is added to the total loss with
    # its weight (0: off), outside the fixed or uncertainty weighting of the heads' own losses.
    center: float = 0.0  # center loss on the embeddings of single-label heads (identity, categorical)
    center_alpha: float = 0.5  # the centres' own update rate (Wen et al.'s alpha); the optimizer does not move them
    contrastive_center: float = 0.0  # contrastive-center loss on single-label heads; centres train with the network
    contrastive_delta: float = 1.0  # delta in its denominator
    exclusive: float = 0.0  # exclusive regularisation of single-label heads' classifier weights
    f_measure: float = 0.0  # relaxed F-measure loss on binary attributes (heads without SA-softmax)
    f_measure_beta2: float = 0.3  # beta^2 of the F-measure (< 1 favours precision)
    f_measure_variant: str = "floss"  # floss (1 - F) | logfloss (-log F)

    def __post_init__(self) -> None:
        if self.weighting not in ("fixed", "uncertainty"):
            raise ConfigError(f"loss.weighting must be 'fixed' or 'uncertainty', not {self.weighting!r}")
        if self.sparse_labels not in ("per_task", "by_coverage"):
            raise ConfigError(f"loss.sparse_labels must be 'per_task' or 'by_coverage', not {self.sparse_labels!r}")
        if self.f_measure_variant not in F_MEASURE_VARIANTS:
            raise ConfigError(f"loss.f_measure_variant must be one of {F_MEASURE_VARIANTS}, not {self.f_measure_variant!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("center", "contrastive_center", "exclusive", "f_measure"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0 (0: off), got {getattr(self, name)}")


@dataclass
class SAConfig:
    plain_epochs: int = 10  # epochs of plain softmax before the N+1 "unrecognizable" class is used
    window_epochs: int = 10  # epochs per counting window of the dynamic tags
    threshold: float = 0.5  # accuracy below which a tag is flipped (to N+1, or back)
    # how the N+1-th output learns once active: "tags" (the thesis's dynamic relabelling) or
    # "gamblers" (Liu et al. 2019: true labels kept, abstaining pays 1/o; see sa_softmax.gamblers_loss)
    method: str = "tags"
    gamblers_reward: float = 0.6  # o = 1 + reward (N - 1): 1.6 for a binary task, 3.4 for 5 classes

    def __post_init__(self) -> None:
        if self.method not in ("tags", "gamblers"):
            raise ConfigError(f"sa.method must be 'tags' or 'gamblers', got {self.method!r}")
        if not 0.0 < self.gamblers_reward <= 1.0:
            raise ConfigError(f"sa.gamblers_reward must be in (0, 1], got {self.gamblers_reward}")


@dataclass
class AugmentConfig:
    flip: bool = True
    max_shift: int = 3  # pixels of random translation (edge-replicated)
    grayscale: float = 0.0  # probability of training on a face's grayscale version (helps heads also used on LFW-a)
    rotate: float = 0.0  # degrees of random rotation, uniform in +-rotate (0: off)
    scale: float = 0.0  # random zoom, uniform in 1 +- scale (0: off)
    erase: float = 0.0  # probability of erasing one random rectangle of 2-20% of the face (0: off)
    color: float = 0.0  # colour jitter: brightness, contrast and saturation each scaled by 1 +- color (0: off)
    mixup: float = 0.0  # mixup's Beta(alpha, alpha) parameter: train on blends of two faces of a dataset (0: off)

    def __post_init__(self) -> None:
        ranges = (("grayscale", 0.0, 1.0), ("erase", 0.0, 1.0), ("color", 0.0, 1.0), ("scale", 0.0, 0.5), ("rotate", 0.0, 180.0))
        for name, low, high in ranges:
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"augment.{name} must be in [{low}, {high}], got {value}")
        if self.max_shift < 0:
            raise ConfigError(f"augment.max_shift must be >= 0, got {self.max_shift}")
        if self.mixup < 0:
            raise ConfigError(f"augment.mixup must be >= 0 (0: off), got {self.mixup}")


@dataclass
class DistillConfig:
    teacher: str = ""  # a checkpoint of `attributes train` with the same datasets and tasks; empty: no distillation
    temperature: float = 4.0  # T: softens both distributions
    weight: float = 1.0  # the distillation term's weight beside the label loss


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
    # With members: member k's trunk starts from entry k (a weights file or the name of shipped
    # weights; "" for random weights) instead of every member from model.trunk.checkpoint. Members
    # that start apart make more different mistakes, which is what averaging them removes.
    member_trunk_checkpoints: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ConfigError(f"members must be at least 1, not {self.members}")
        if self.member_trunk_checkpoints and len(self.member_trunk_checkpoints) != self.members:
            raise ConfigError(f"member_trunk_checkpoints names {len(self.member_trunk_checkpoints)} starting points for "
                              f"{self.members} members: give one per member ('' for random weights)")


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
