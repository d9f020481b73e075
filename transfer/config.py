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
from engine.config import to_dict

__all__ = [
    "ARM_NAMES", "faceset_parts", "faceset_transform", "SRStageConfig", "AugmentMixConfig", "ArmOptions", "BudgetConfig", "StatsConfig", "StudyConfig",
]

# Every arm, in report order; `transfer.arms` defines each recipe.
ARM_NAMES = ("source_only", "target_only", "sr_mix", "bicubic_mix", "augment_mix", "colour_match", "dann", "joint")


def faceset_parts(name: str) -> list[str]:
    """The concatenated parts of a face-set name, `"D/split + D/split|kind:arg"` -> its two parts."""
    return [part.strip() for part in name.split("+")]


def faceset_transform(part: str) -> tuple[str, str, str] | None:
    """One part's (base face set, transform kind, argument): `"D/train|sr:T"` -> ("D/train", "sr", "T");
    None for an untransformed part."""
    if "|" not in part:
        return None
    base, transform = part.split("|", 1)
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
class ArmOptions:
    colour_match: str = "grayscale"  # grayscale | target_stats (source faces get the target train split's per-channel mean and std)
    augment: AugmentMixConfig = field(default_factory=AugmentMixConfig)
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
