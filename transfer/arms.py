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
    "lfw/train|sr:celeba|gray"     transforms chain left to right
    "a + b"                        a 1:1 concatenation of two equally long sets

Adding an arm is adding one function to `ARMS`. Every arm trains the same trunk for the same
number of optimiser steps on the same number of labelled faces per step (`BudgetConfig`):
a mix replaces half of a batch's originals by transformed copies, joint training takes half a
batch from each domain, and DANN adds unlabelled target faces on top (its extra forward
passes are the method, and they carry no label).

Some arms are training procedures rather than data mixes: after a first phase on the source,
they adapt to the target's train faces without their labels (`transfer.adaptation`). TENT and
self-training take their optimiser steps out of the same budget (the first phase trains for the
rest); AdaBN, which any arm can end with (`"<arm>+adabn"`), re-estimates BatchNorm statistics and
takes no optimiser step. Each such recipe names the one target face set it may see
(`target_faces`: the target's train split in the recipe's test colours; self-training may also
label those faces in other colours, `label_faces`); a stage builds on the
trained model of the recipe before it (`previous`), so AdaBN on top of an arm reuses that arm's
training.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from transfer.config import (ADABN_SUFFIX, ARM_NAMES, ArmOptions, StudyConfig, arm_base, faceset_parts,
                             faceset_transform)

__all__ = ["Recipe", "ARMS", "recipe_for", "faces_for_testing", "target_train_faces", "is_known_arm"]


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
    steps: int = 0  # optimiser steps in all, when they are not the study's budget.steps (a first phase)
    adapt: str = ""  # "" | "tent" | "self_train": a last phase on target_faces, without their labels
    adapt_steps: int = 0  # the optimiser steps of that phase, out of `steps`
    adabn: bool = False  # end with the BatchNorm statistics re-estimated on target_faces
    target_faces: str = ""  # the only target faces an adapting recipe sees: its train split, no labels
    sa_softmax: bool = False  # train an SA-softmax head (self-training then keeps the target faces graded S or A)
    label_faces: str = ""  # self-training: the same target faces as the model labels them, when not as it learns them

    def key(self) -> dict:
        """What the trained model depends on (not the arm's name nor the direction): two arms
        with equal keys are one training run, e.g. source-only A->B and target-only B->A."""
        key = {"train": [list(t) for t in self.train], "unlabelled": list(self.unlabelled),
               "batch_size": self.batch_size, "test_colour": self.test_colour,
               "domain_adversarial": self.domain_adversarial}
        # Only when set, so that the recipes before adaptation keep their keys (and cached cells).
        for name in ("steps", "adapt", "adapt_steps", "adabn", "target_faces", "sa_softmax", "label_faces"):
            if getattr(self, name):
                key[name] = getattr(self, name)
        return key

    def previous(self) -> "Recipe | None":
        """The recipe whose trained model this one starts from: without its AdaBN, or its
        first phase (the same data for the steps before adaptation); None for a plain training."""
        if self.adabn:
            if self.arm.endswith(ADABN_SUFFIX) or self.arm == "adabn":
                arm = "source_only" if self.arm == "adabn" else arm_base(self.arm)
            else:
                arm = f"{self.arm}-before-adabn"
            return replace(self, arm=arm, adabn=False, target_faces=self.target_faces if self.adapt else "")
        if self.adapt:
            return replace(self, arm=f"{self.arm}-phase1", adapt="", adapt_steps=0, target_faces="", label_faces="",
                           steps=self.steps - self.adapt_steps)
        return None

    def options_used(self, options: ArmOptions) -> dict:
        """The study options this recipe's training reads: its face sets' transforms, and DANN's
        settings when it is adversarial. A cell is fingerprinted with these alone, so changing,
        say, the colour-match mode retrains only the colour-match cells."""
        used: dict = {}
        names = [faces for _, faces in self.train] + [self.target_faces or "", self.label_faces or ""]
        for part in [p for faces in names for p in faceset_parts(faces)]:
            transform = faceset_transform(part)
            while transform is not None:  # every transform of a chain
                used.update(options.used_by_transform(transform[1]))
                transform = faceset_transform(transform[0])
        if self.domain_adversarial:
            used.update(options.used_by_dann())
        if self.adapt or self.sa_softmax:
            used.update(options.adapt.used_by(self.adapt, self.sa_softmax))
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


def _with_adaptation(recipe: Recipe, arm: str, adapt: str, adapt_steps: int, target: str, config: StudyConfig,
                     adabn: bool = False) -> Recipe:
    return replace(recipe, arm=arm, adapt=adapt, adapt_steps=adapt_steps, adabn=adabn, steps=config.budget.steps,
                   target_faces=target_train_faces(target, recipe.test_colour))


def _self_train_steps(config: StudyConfig) -> int:
    steps = config.budget.steps
    return min(steps - 1, max(1, round(config.options.adapt.self_train_fraction * steps)))


def _adabn(s: str, t: str, config: StudyConfig) -> Recipe:
    return replace(_source_only(s, t, config), arm="adabn", adabn=True, target_faces=f"{t}/train")


def _tent(s: str, t: str, config: StudyConfig) -> Recipe:
    steps = config.options.adapt.tent_steps
    if steps >= config.budget.steps:
        raise ValueError(f"options.adapt.tent_steps ({steps}) must be fewer than budget.steps ({config.budget.steps})")
    return _with_adaptation(_source_only(s, t, config), "tent", "tent", steps, t, config)


def _self_train(s: str, t: str, config: StudyConfig) -> Recipe:
    return _with_adaptation(_source_only(s, t, config), "self_train", "self_train", _self_train_steps(config), t, config)


def _self_train_sa(s: str, t: str, config: StudyConfig) -> Recipe:
    """Self-training whose pseudo-labels are the target faces its SA-softmax grades S or A (Yu
    2017's grades choose them, in place of a threshold on max-softmax)."""
    source_only = replace(_source_only(s, t, config), sa_softmax=True)
    return _with_adaptation(source_only, "self_train_sa", "self_train", _self_train_steps(config), t, config)


def _colour_self_train(s: str, t: str, config: StudyConfig) -> Recipe:
    """Colour-match, then self-training in the matched colours, then AdaBN."""
    return _with_adaptation(_colour_match(s, t, config), "colour_self_train", "self_train", _self_train_steps(config), t,
                            config, adabn=True)


def _colour_self_train_no_adabn(s: str, t: str, config: StudyConfig) -> Recipe:
    """Colour-match, then self-training in the matched colours: `colour_self_train` without its
    AdaBN pass, to measure what that pass does after self-training (AdaBN alone costs a
    colour-matched model 2.3 points into LFW-a). The same cells as that arm's before its AdaBN,
    so a study that ran one reuses them for the other."""
    return _with_adaptation(_colour_match(s, t, config), "colour_self_train_no_adabn", "self_train",
                            _self_train_steps(config), t, config)


def _colour_teacher_self_train(s: str, t: str, config: StudyConfig) -> Recipe:
    """Colour-match, then self-training across colour spaces: the model labels the target's
    train faces in the matched colours (where it was trained and is right most often) and learns
    those labels on the same faces in the target's own colours, in which it is then tested. With
    a grayscale source and a colour target, this is the one way for a label-free arm to learn
    what colour says; where the matched colours are the target's own, it is
    `colour_self_train_no_adabn` tested as the target's faces come."""
    recipe = _with_adaptation(_colour_match(s, t, config), "colour_teacher_self_train", "self_train",
                              _self_train_steps(config), t, config)
    return replace(recipe, test_colour="", target_faces=target_train_faces(t, ""), label_faces=recipe.target_faces)


def _combined(s: str, t: str, config: StudyConfig) -> Recipe:
    """Colour-match and SR-mix (half of each batch super-resolved, every face in the matched
    colours), then self-training, then AdaBN."""
    colour = _colour_match(s, t, config)
    matched = colour.train[0][1]  # "s/train|gray" or "s/train|stats:t"
    transform = matched.split("|", 1)[1]
    mix = replace(colour, train=((s, f"{matched} + {s}/train|sr:{t}|{transform}"),), needs_sr=(t,))
    return _with_adaptation(mix, "combined", "self_train", _self_train_steps(config), t, config, adabn=True)


ARMS: dict[str, Callable[[str, str, StudyConfig], Recipe]] = {
    "source_only": _source_only,
    "target_only": _target_only,
    "sr_mix": _sr_mix,
    "bicubic_mix": _bicubic_mix,
    "augment_mix": _augment_mix,
    "colour_match": _colour_match,
    "dann": _dann,
    "joint": _joint,
    "adabn": _adabn,
    "tent": _tent,
    "self_train": _self_train,
    "self_train_sa": _self_train_sa,
    "colour_self_train": _colour_self_train,
    "colour_self_train_no_adabn": _colour_self_train_no_adabn,
    "colour_teacher_self_train": _colour_teacher_self_train,
    "combined": _combined,
}
assert tuple(ARMS) == ARM_NAMES


def is_known_arm(arm: str) -> bool:
    return arm_base(arm) in ARMS


def recipe_for(arm: str, source: str, target: str, config: StudyConfig) -> Recipe:
    if not is_known_arm(arm):
        raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}, each also as ARM{ADABN_SUFFIX}")
    recipe = ARMS[arm_base(arm)](source, target, config)
    if arm.endswith(ADABN_SUFFIX) and not recipe.adabn:
        recipe = replace(recipe, arm=arm, adabn=True,
                         target_faces=recipe.target_faces or target_train_faces(target, recipe.test_colour))
    return recipe


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


def target_train_faces(target: str, test_colour: str) -> str:
    """The target's train faces as a recipe sees its test faces (the face set an adapting recipe
    may read, without labels)."""
    return faces_for_testing(target, test_colour).replace(f"{target}/test", f"{target}/train", 1)
