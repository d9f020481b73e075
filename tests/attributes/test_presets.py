"""Every attribute preset that ships with the package loads, and its templates exist."""
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from attributes.config import AttributeRunConfig
from data_prep.align.templates import get_template
from engine.config import load_config

PRESET_DIR = Path(str(resources.files("attributes") / "presets"))
PRESETS = sorted(PRESET_DIR.glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_loads_and_names_a_real_template(preset):
    run = load_config(AttributeRunConfig, preset)
    for entry in run.datasets.values():
        get_template(entry.template)  # raises for an unknown name or a missing file


def test_portrait_preset_differs_from_celeba64_only_in_alignment_and_folders():
    base = load_config(AttributeRunConfig, PRESET_DIR / "celeba64.yaml")
    portrait = load_config(AttributeRunConfig, PRESET_DIR / "celeba64-portrait.yaml")
    assert portrait.datasets["celeba"].template == "portrait" and base.datasets["celeba"].template == "thesis"
    # presets name no cache folder: each run aligns into its own OUT/cache
    assert not portrait.datasets["celeba"].cache_dir and portrait.trainer.out_dir != base.trainer.out_dir
    for section in ("model", "optim", "augment", "eval"):
        assert getattr(portrait, section) == getattr(base, section)
    assert portrait.trainer.max_steps == base.trainer.max_steps and portrait.trainer.batch_size == base.trainer.batch_size


def test_every_face_preset_is_the_portrait_model_with_the_closeup_crop_on_every_person_by_two_members():
    portrait = load_config(AttributeRunConfig, PRESET_DIR / "celeba64-portrait.yaml")
    everyone = load_config(AttributeRunConfig, PRESET_DIR / "celeba64-closeup-all.yaml")
    assert everyone.datasets["celeba"].train_split == "all" and portrait.datasets["celeba"].train_split == "train"
    assert everyone.datasets["celeba"].template == "closeup" and portrait.datasets["celeba"].template == "portrait"
    assert everyone.trainer.out_dir != portrait.trainer.out_dir  # other faces, other cache (OUT/cache)
    everyone.datasets["celeba"] = replace(everyone.datasets["celeba"], train_split="train", template="portrait",
                                          cache_dir=portrait.datasets["celeba"].cache_dir)
    assert everyone.datasets == portrait.datasets  # the same people and split otherwise
    for section in ("model", "optim", "augment", "loss"):
        assert getattr(everyone, section) == getattr(portrait, section)
    assert everyone.trainer.batch_size == portrait.trainer.batch_size
    # two bfloat16 members of 1,700 steps: measured as good as 2,600-step members, and within the budget
    assert everyone.members == 2 and everyone.trainer.max_steps == 1700 and everyone.trainer.amp
    assert portrait.members == 1


def test_train_split_is_checked_when_the_config_is_built():
    from attributes.config import DatasetEntry
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match="train_split"):
        DatasetEntry(train_split="everything")


def test_the_vgg_preset_is_the_closeup_ensemble_with_another_trunk_size_and_label_smoothing():
    closeup = load_config(AttributeRunConfig, PRESET_DIR / "celeba64-closeup-all.yaml")
    vgg = load_config(AttributeRunConfig, PRESET_DIR / "celeba80-vgg-closeup-all.yaml")
    assert (vgg.model.trunk.name, vgg.model.trunk.input_size, vgg.model.trunk.width) == ("vgg_bn", 80, 0.5)
    assert vgg.loss.label_smoothing == 0.1 and closeup.loss.label_smoothing == 0.0
    assert vgg.trainer.out_dir != closeup.trainer.out_dir
    assert vgg.datasets == closeup.datasets and vgg.model.head == closeup.model.head
    for section in ("optim", "augment", "eval"):
        assert getattr(vgg, section) == getattr(closeup, section)
    assert (vgg.members, vgg.trainer.max_steps, vgg.trainer.amp) == (closeup.members, closeup.trainer.max_steps, True)
    from attributes.trunks import shipped_trunk_weights

    # member 0 from the face-pretrained trunk that ships with facegan, member 1 from random weights
    assert vgg.member_trunk_checkpoints[1] == "" and vgg.member_trunk_checkpoints[0] in shipped_trunk_weights()
