from dataclasses import dataclass, field

import pytest

from engine.config import ConfigError, load_config, save_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)


@dataclass
class Run:
    name: str = "run"
    steps: int = 10
    amp: bool = False
    data: str | None = None
    optim: Optim = field(default_factory=Optim)


def test_defaults_yaml_and_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("steps: 20\noptim:\n  lr: 0.0002\n")
    cfg = load_config(Run, preset, ["optim.betas=[0.0, 0.9]", "amp=true", "data=celeba"])
    assert cfg.steps == 20 and cfg.optim.lr == 2e-4 and cfg.optim.betas == (0.0, 0.9)
    assert cfg.amp is True and cfg.data == "celeba" and cfg.name == "run"


def test_roundtrip_through_yaml(tmp_path):
    cfg = load_config(Run, None, ["steps=3"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Run, tmp_path / "c.yaml") == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.5, 0.999]


@pytest.mark.parametrize(
    "override, message",
    [("stepz=3", "unknown key"), ("steps=2.5", "expected an integer"), ("amp=maybe", "true/false"), ("noequals", "key.sub=value")],
)
def test_bad_overrides_are_clear(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, None, [override])


def test_unknown_key_in_preset(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("optim:\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match="momentum"):
        load_config(Run, preset)


def test_an_override_reaches_a_key_the_preset_left_out_of_a_mapping_entry():
    # `facegan transfer run synthetic-quick --dataset wild=/data/wild` sets domains.wild.root,
    # which the preset's domain entries do not write; it must not be "unknown key 'root'".
    from engine.presets import resolve_preset
    from transfer.config import StudyConfig

    config = load_config(StudyConfig, resolve_preset("synthetic-quick", "transfer"),
                         ["domains.wild.root=/data/wild", "domains.studio.synthetic_identities=7"])
    assert str(config.domains["wild"].root) == "/data/wild"
    assert config.domains["studio"].synthetic_identities == 7 and not config.domains["studio"].root
    with pytest.raises(ConfigError, match="unknown key 'rot'"):
        load_config(StudyConfig, resolve_preset("synthetic-quick", "transfer"), ["domains.wild.rot=/x"])
