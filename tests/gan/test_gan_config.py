"""GANConfig: paper defaults, resolution of loss-dependent defaults, validation, YAML round trip."""
import pytest

from engine.config import ConfigError, from_dict, load_config, to_dict
from gan.generators.config import BEGANConfig, DCGANConfig, GANConfig


def test_defaults_follow_the_papers():
    cfg = GANConfig().resolved()
    assert cfg.model == "began" and cfg.image_size == 64 and cfg.latent_distribution == "uniform"
    d = GANConfig(model="dcgan").resolved().dcgan
    assert (d.latent_dim, d.g_channels, d.loss, d.d_norm, d.n_critic) == (100, 1024, "nonsaturating", "batch", 1)
    assert (d.lr_g, d.lr_d, d.betas) == (2e-4, 2e-4, (0.5, 0.999))
    b = cfg.began
    assert (b.latent_dim, b.hidden_channels, b.bottleneck_dim) == (64, 128, 64)
    assert (b.gamma, b.lambda_k, b.k_init, b.eta, b.lr) == (0.5, 0.001, 0.0, 1.0, 1e-4)
    assert GANConfig(model="dcgan").latent_dim == 100 and GANConfig().latent_dim == 64


def test_wgan_gp_resolves_to_gulrajani_settings_unless_overridden():
    d = DCGANConfig(loss="wgan-gp").resolved()
    assert (d.d_norm, d.n_critic, d.lr_g, d.lr_d, d.betas, d.gp_weight) == ("layer", 5, 1e-4, 1e-4, (0.0, 0.9), 10.0)
    custom = DCGANConfig(loss="wgan-gp", d_norm="none", n_critic=3, lr_d=3e-4, betas=(0.5, 0.9)).resolved()
    assert (custom.d_norm, custom.n_critic, custom.lr_g, custom.lr_d, custom.betas) == ("none", 3, 1e-4, 3e-4, (0.5, 0.9))
    assert DCGANConfig(loss="hinge").resolved().betas == (0.5, 0.999)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DCGANConfig(loss="wgan-gp", d_norm="batch"), "must not use BatchNorm in the critic"),
        (lambda: DCGANConfig(loss="lsgan"), "unknown loss 'lsgan'"),
        (lambda: DCGANConfig(d_norm="instance"), "dcgan.d_norm"),
        (lambda: DCGANConfig(n_critic=0), "dcgan.n_critic"),
        (lambda: DCGANConfig(betas=(0.5, 1.5)), "dcgan.betas"),
        (lambda: BEGANConfig(gamma=0.0), "began.gamma"),
        (lambda: BEGANConfig(gamma=1.5), "began.gamma"),
        (lambda: BEGANConfig(k_init=2.0), "began.k_init"),
        (lambda: GANConfig(model="stylegan"), "unknown model 'stylegan'"),
        (lambda: GANConfig(image_size=48), "image_size: must be one of"),
        (lambda: GANConfig(latent_distribution="cauchy"), "latent_distribution"),
    ],
)
def test_bad_values_are_config_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_yaml_preset_and_overrides_round_trip(tmp_path):
    preset = tmp_path / "wgan.yaml"
    preset.write_text("model: dcgan\nimage_size: 32\ndcgan:\n  loss: wgan-gp\n  betas: [0.0, 0.99]\n")
    cfg = load_config(GANConfig, preset, ["dcgan.n_critic=2", "began.gamma=0.7"])
    assert cfg.model == "dcgan" and cfg.image_size == 32
    assert cfg.dcgan.loss == "wgan-gp" and cfg.dcgan.betas == (0.0, 0.99) and cfg.dcgan.n_critic == 2
    assert cfg.began.gamma == 0.7 and cfg.dcgan.lr_g is None  # left for resolved()
    assert from_dict(GANConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="must not use BatchNorm"):
        load_config(GANConfig, preset, ["dcgan.d_norm=batch"])
