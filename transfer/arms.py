"""The arms of a cross-domain study: each a named recipe, defined once, here.

A recipe says which face sets an attribute model trains on, which unlabelled faces it sees,
and how test faces are brought into its colour space. Face sets are named by strings that
`transfer.facesets.FaceSets` knows how to build and cache:

    "lfw/train"                    the aligned faces of a domain's split
    "lfw/train|sr:celeba"          degraded as celeba's SR model was trained, then super-resolved by it
    "lfw/train|bicubic:celeba"     the same degradation, bicubic upsampling instead
    "lfw/train|augment"            one photometrically augmented copy
    "lfw/train|gray"               grayscale (luminance in all three channels)
    "lfw/train|stats:celeba"       per-channel mean and std matched to celeba's train split
    "a + b"                        a 1:1 concatenation of two equally long sets

Adding an arm is adding one function to `ARMS`. Every arm trains the same trunk for the same
number of optimiser steps on the same number of labelled faces per step (`BudgetConfig`):
a mix replaces half of a batch's originals by transformed copies, joint training takes half a
batch from each domain, and DANN adds unlabelled target faces on top (its extra forward
passes are the method, and they carry no label).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from transfer.config import ARM_NAMES, ArmOptions, StudyConfig, faceset_parts, faceset_transform

__all__ = ["Recipe", "ARMS", "recipe_for", "faces_for_testing"]


@dataclass(frozen=True)
class Recipe:
    arm: str
    source: str
    target: str
    train: tuple[tuple[str, str], ...]  # (dataset name in the model, face set) pairs, each a labelled stream
    unlabelled: tuple[str, ...] = ()  # face sets seen without labels (DANN's target faces)
    batch_size: int = 64  # faces per labelled stream per step
    test_colour: str = ""  # "" | "gray" | "stats:<domain>": how every test face is transformed
    domain_adversarial: bool = False
    needs_sr: tuple[str, ...] = field(default=())  # target domains whose SR model this recipe uses

    def key(self) -> dict:
        """What the trained model depends on (not the arm's name nor the direction): two arms
        with equal keys are one training run, e.g. source-only A->B and target-only B->A."""
        return {"train": [list(t) for t in self.train], "unlabelled": list(self.unlabelled),
                "batch_size": self.batch_size, "test_colour": self.test_colour,
                "domain_adversarial": self.domain_adversarial}

    def options_used(self, options: ArmOptions) -> dict:
        """The study options this recipe's training reads: its face sets' transforms, and DANN's
        settings when it is adversarial. A cell is fingerprinted with these alone, so changing,
        say, the colour-match mode retrains only the colour-match cells."""
        used: dict = {}
        for _, faces in self.train:
            for part in faceset_parts(faces):
                transform = faceset_transform(part)
                if transform is not None:
                    used.update(options.used_by_transform(transform[1]))
        if self.domain_adversarial:
            used.update(options.used_by_dann())
        return used


def _source_only(s: str, t: str, config: StudyConfig) -> Recipe:
    return Recipe("source_only", s, t, ((s, f"{s}/train"),), batch_size=config.budget.batch_size)


def _target_only(s: str, t: str, config: StudyConfig) -> Recipe:
    return Recipe("target_only", s, t, ((t, f"{t}/train"),), batch_size=config.budget.batch_size)


def _mix(arm: str, transform: str, s: str, t: str, config: StudyConfig, needs_sr: tuple[str, ...] = ()) -> Recipe:
    return Recipe(arm, s, t, ((s, f"{s}/train + {s}/train|{transform}"),), batch_size=config.budget.batch_size,
                  needs_sr=needs_sr)


def _sr_mix(s: str, t: str, config: StudyConfig) -> Recipe:
    return _mix("sr_mix", f"sr:{t}", s, t, config, needs_sr=(t,))


def _bicubic_mix(s: str, t: str, config: StudyConfig) -> Recipe:
    return _mix("bicubic_mix", f"bicubic:{t}", s, t, config, needs_sr=(t,))


def _augment_mix(s: str, t: str, config: StudyConfig) -> Recipe:
    return _mix("augment_mix", "augment", s, t, config)


def _colour_match(s: str, t: str, config: StudyConfig) -> Recipe:
    mode = config.options.colour_match
    if mode == "grayscale":
        return Recipe("colour_match", s, t, ((s, f"{s}/train|gray"),), batch_size=config.budget.batch_size,
                      test_colour="gray")
    if mode == "target_stats":
        return Recipe("colour_match", s, t, ((s, f"{s}/train|stats:{t}"),), batch_size=config.budget.batch_size,
                      test_colour=f"stats:{t}")
    raise ValueError(f"options.colour_match must be 'grayscale' or 'target_stats', not {mode!r}")


def _dann(s: str, t: str, config: StudyConfig) -> Recipe:
    return Recipe("dann", s, t, ((s, f"{s}/train"),), unlabelled=(f"{t}/train",), batch_size=config.budget.batch_size,
                  domain_adversarial=True)


def _joint(s: str, t: str, config: StudyConfig) -> Recipe:
    half = max(1, config.budget.batch_size // 2)
    first, second = sorted((s, t))  # one run serves both directions
    return Recipe("joint", s, t, ((first, f"{first}/train"), (second, f"{second}/train")), batch_size=half)


ARMS: dict[str, Callable[[str, str, StudyConfig], Recipe]] = {
    "source_only": _source_only,
    "target_only": _target_only,
    "sr_mix": _sr_mix,
    "bicubic_mix": _bicubic_mix,
    "augment_mix": _augment_mix,
    "colour_match": _colour_match,
    "dann": _dann,
    "joint": _joint,
}
assert tuple(ARMS) == ARM_NAMES


def recipe_for(arm: str, source: str, target: str, config: StudyConfig) -> Recipe:
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")
    return ARMS[arm](source, target, config)


def faces_for_testing(domain: str, test_colour: str) -> str:
    """The face set a recipe is tested on for `domain`: its test split in the recipe's colours.
    With `stats:<target>`, the target's own faces are already in its colours."""
    if not test_colour:
        return f"{domain}/test"
    if test_colour == "gray":
        return f"{domain}/test|gray"
    if test_colour.startswith("stats:"):
        target = test_colour.split(":", 1)[1]
        return f"{domain}/test" if domain == target else f"{domain}/test|{test_colour}"
    raise ValueError(f"unknown test colour transform {test_colour!r}")
