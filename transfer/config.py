"""The configuration of a cross-domain study: one dataclass tree, presets in presets/*.yaml.

A study names its domains (data_prep sources, each with an identity-disjoint test split), the
directions source->target to study, the tasks compared (by their label-schema names), the arms,
the seeds, the trunk and one training budget that every arm gets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from attributes.config import DatasetEntry, OptimConfig
from attributes.model import ModelConfig
from attributes.trunks import TrunkConfig
from engine.config import ConfigError, to_dict

__all__ = [
    "ARM_NAMES", "ADABN_SUFFIX", "arm_base", "faceset_parts", "faceset_transform", "SRStageConfig", "AugmentMixConfig",
    "AdaptationConfig", "ArmOptions", "BudgetConfig", "StatsConfig", "StudyConfig",
]

# Every arm, in report order; `transfer.arms` defines each recipe.
ARM_NAMES = ("source_only", "target_only", "sr_mix", "bicubic_mix", "augment_mix", "colour_match", "dann", "joint",
             "adabn", "tent", "self_train", "self_train_sa", "colour_self_train", "colour_self_train_no_adabn",
             "colour_teacher_self_train", "combined")
# Any arm named with this suffix ends with AdaBN: its model's BatchNorm statistics re-estimated on
# the target's train faces ("colour_match+adabn").
ADABN_SUFFIX = "+adabn"


def arm_base(arm: str) -> str:
    """The arm an arm name builds on: "colour_match+adabn" -> "colour_match"."""
    return arm[:-len(ADABN_SUFFIX)] if arm.endswith(ADABN_SUFFIX) else arm


def faceset_parts(name: str) -> list[str]:
    """The concatenated parts of a face-set name, `"D/split + D/split|kind:arg"` -> its two parts."""
    return [part.strip() for part in name.split("+")]


def faceset_transform(part: str) -> tuple[str, str, str] | None:
    """One part's (base face set, transform kind, argument): `"D/train|sr:T"` -> ("D/train", "sr", "T");
    None for an untransformed part. Transforms chain left to right, so the last one is applied to
    the set before it: `"D/train|sr:T|gray"` -> ("D/train|sr:T", "gray", "")."""
    if "|" not in part:
        return None
    base, transform = part.rsplit("|", 1)
    kind, _, argument = transform.partition(":")
    return base, kind, argument


@dataclass
class SRStageConfig:
    """The SR model of one target domain: trained on that domain's train split only."""

    checkpoint: str = ""  # an existing `facegan sr train` checkpoint; empty: the study trains one (a cached stage)
    config: str = "x4-16to64-cpu"  # the SR preset (a name, or a YAML file) used to train one; "": the defaults
    overrides: list[str] = field(default_factory=list)  # KEY=VALUE for that preset, e.g. trainer.max_seconds=600


@dataclass
class AugmentMixConfig:
    """The augment-mix arm: one augmented copy of every source face (standard photometric noise)."""

    brightness: float = 0.3  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.3
    saturation: float = 0.3
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.5, 1.5)  # pixels at the training size
    noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (2.0, 10.0)  # 0..255 scale


@dataclass
class AdaptationConfig:
    """The arms that adapt to the target's train faces without their labels (AdaBN, TENT,
    self-training). Their optimiser steps come out of the arm's budget: the first phase trains
    on the source for the rest."""

    tent_steps: int = 30  # TENT's entropy-minimisation steps on target faces
    tent_lr: float = 1e-3  # Adam's learning rate on the BatchNorm scales and shifts, the only weights TENT changes
    self_train_fraction: float = 0.5  # share of the budget trained on source labels plus target pseudo-labels
    relabel_every: int = 50  # steps between two labellings of the target faces by the model being trained
    precision: float = 0.95  # self_train keeps a pseudo-label when its max-softmax is at least the threshold at which this
    # share of the SOURCE validation faces is right (never chosen on target labels); self_train_sa keeps grades S and A
    sa_plain_epochs: int = 0  # self_train_sa: epochs of plain softmax before the "unrecognizable" class (each phase)
    sa_window_epochs: int = 1  # self_train_sa: epochs per counting window of the dynamic tags
    strong_color: float = 0.4  # the strong view of a pseudo-labelled face (FixMatch): colour jitter of 1 +- this
    strong_erase: float = 0.5  # and the probability of erasing one rectangle of it
    # self_train (max-softmax): the threshold sets how many faces are kept; every predicted class
    # then gives the same share of its own most confident faces (Zou et al. 2018, class-balanced)
    balance_classes: bool = False

    def __post_init__(self) -> None:
        if self.sa_plain_epochs < 0 or self.sa_window_epochs < 1:
            raise ConfigError("options.adapt.sa_plain_epochs must be >= 0 and options.adapt.sa_window_epochs >= 1")
        if not 0.0 < self.self_train_fraction < 1.0:
            raise ConfigError(f"options.adapt.self_train_fraction must be in (0, 1), got {self.self_train_fraction}")
        if not 0.5 <= self.precision <= 1.0:
            raise ConfigError(f"options.adapt.precision must be in [0.5, 1], got {self.precision}")
        if self.tent_steps < 1 or self.relabel_every < 1:
            raise ConfigError("options.adapt.tent_steps and options.adapt.relabel_every must be at least 1")

    def used_by(self, procedure: str, sa_softmax: bool = False) -> dict:
        """The options one procedure reads (its step count is in the recipe itself); with
        `sa_softmax`, those of training an SA head and selecting by its grades."""
        used: dict = {}
        if procedure == "tent":
            used["tent_lr"] = self.tent_lr
        if procedure == "self_train":
            used.update({key: getattr(self, key) for key in ("relabel_every", "strong_color", "strong_erase")})
            if not sa_softmax:
                used["precision"] = self.precision
                if self.balance_classes:  # absent at its default: cells cached before it keep their fingerprints
                    used["balance_classes"] = True
        if sa_softmax:
            used.update(sa_plain_epochs=self.sa_plain_epochs, sa_window_epochs=self.sa_window_epochs)
        return used


@dataclass
class ArmOptions:
    colour_match: str = "grayscale"  # grayscale | target_stats (source faces get the target train split's per-channel mean and std)
    augment: AugmentMixConfig = field(default_factory=AugmentMixConfig)
    adapt: AdaptationConfig = field(default_factory=AdaptationConfig)
    dann_weight: float = 0.3  # largest weight of the domain loss; it ramps up as 2/(1+exp(-10p))-1 over training
    dann_hidden: int = 128  # width of the domain classifier's hidden layer
    degradation_seed: int = 0  # seeds the degradation of the source faces (SR-mix and bicubic-mix share it)

    def used_by_transform(self, kind: str) -> dict:
        """The options a face-set transform (`sr`, `bicubic`, `augment`, `gray`, `stats`) reads.
        Caches key on these alone, so changing an option re-runs only what reads it. The colour
        mode is not here: it chooses which transform a recipe uses, and the face-set name says so."""
        if kind in ("sr", "bicubic"):
            return {"degradation_seed": self.degradation_seed}
        if kind == "augment":
            return {"augment": to_dict(self.augment), "degradation_seed": self.degradation_seed}
        return {}

    def used_by_dann(self) -> dict:
        return {"dann_weight": self.dann_weight, "dann_hidden": self.dann_hidden}


@dataclass
class BudgetConfig:
    """The same for every arm, so that a 1:1 mix buys no extra compute."""

    steps: int = 300  # optimiser steps
    batch_size: int = 64  # labelled faces per step (joint: half from each domain); DANN adds as many unlabelled target faces
    ema_decay: float = 0.99  # the EMA weights are evaluated
    threads: int = 0  # torch threads for training and inference (0: leave torch's default)
    device: str = "auto"


@dataclass
class StatsConfig:
    n_boot: int = 1000  # bootstrap resamples of the test identities (files where a dataset has none)
    level: float = 0.95
    alpha: float = 0.05  # family-wise error of the Holm-corrected arm-vs-source-only comparisons
    seed: int = 0


def _default_model() -> ModelConfig:
    return ModelConfig(trunk=TrunkConfig(name="alexnet_bn", input_size=64, width=0.25))


@dataclass
class StudyConfig:
    name: str = "study"
    # domain name -> where its faces are; `tasks` and `train_split` are set by the study
    domains: dict[str, DatasetEntry] = field(default_factory=dict)
    directions: list[str] = field(default_factory=list)  # "source->target"
    tasks: list[str] = field(default_factory=lambda: ["Male"])
    arms: list[str] = field(default_factory=lambda: list(ARM_NAMES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: ModelConfig = field(default_factory=_default_model)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, warmup_steps=30))
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    sr: dict[str, SRStageConfig] = field(default_factory=dict)  # target domain -> its SR stage
    options: ArmOptions = field(default_factory=ArmOptions)
    stats: StatsConfig = field(default_factory=StatsConfig)
    out_dir: str = "runs/transfer/study"
    strips: int = 6  # faces per domain in the report's SR strips
    domain_gap_faces: int = 600  # faces per set for the Fréchet domain-gap table in trunk features (0: leave the table out)
    domain_gap_embedded_faces: int = 200  # faces per set for its FD-face column (dlib embeds ~12 faces/s on 2 cores; 0: leave it out)
