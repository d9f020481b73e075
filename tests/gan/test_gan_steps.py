"""DCGANStep and BEGANStep: batch decoding, sampling, state, and runs under the engine's Trainer."""
import dataclasses
import json
import statistics

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from engine.checkpoint import load_checkpoint
from engine.distributed import DistributedInfo
from engine.errors import FaceganError
from engine.trainer import Step, StepContext, Trainer, TrainerConfig
from engine.config import to_dict
from gan.generators.config import BEGANConfig, DCGANConfig, GANConfig
from gan.generators.step import BEGANStep, DCGANStep, GANInputError, build_gan_step


def _dcgan_cfg(**dcgan) -> GANConfig:
    dcgan = {"g_channels": 32, "d_channels": 32, **dcgan}
    return GANConfig(model="dcgan", image_size=32, num_samples=16, interpolation_rows=2, dcgan=DCGANConfig(**dcgan))


def _began_cfg(**began) -> GANConfig:
    began = {"latent_dim": 16, "hidden_channels": 4, "bottleneck_dim": 16, "lr": 1e-3, **began}
    return GANConfig(model="began", image_size=32, num_samples=16, interpolation_rows=2, began=BEGANConfig(**began))


def _context(step) -> StepContext:
    """What the Trainer hands a step, built by hand for single-call tests."""
    ctx = StepContext(torch.device("cpu"), DistributedInfo(), amp=False, grad_clip=0.0)
    ctx.models = step.modules()
    ctx.optimizers = step.optimizers()
    ctx.scalers = {name: torch.amp.GradScaler("cpu", enabled=False) for name in ctx.optimizers}
    step.setup(ctx)
    return ctx


def blobs(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Soft coloured discs on a black background, in [-1, 1]: an easy image distribution."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * size * 0.5 + size * 0.25
    radius = torch.rand(n, 1, 1, generator=g) * size * 0.1 + size * 0.12
    colour = torch.rand(n, 3, 1, 1, generator=g) * 1.6 - 0.6
    dist2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    mask = torch.exp(-dist2 / (2 * radius**2))[:, None]
    return (-1 + mask * (colour + 1)).clamp(-1, 1)


class DictFaces(Dataset):
    """Yields what data_prep's FaceDataset yields: a dict with a uint8 CHW "image"."""

    def __init__(self, n: int = 40):
        self.images = ((blobs(n) + 1) * 127.5).round().to(torch.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"image": self.images[index], "targets": torch.zeros(2), "index": index}


def _trainer_config(path, **overrides) -> TrainerConfig:
    base = dict(out_dir=str(path), max_steps=30, batch_size=8, seed=5, deterministic=True, log_every=1,
                sample_every=15, checkpoint_every=10, progress=False, tensorboard=False, ema_decay=0.9,
                ema_modules=("generator",))
    base.update(overrides)
    return TrainerConfig(**base)


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- batches
def test_batches_in_every_supported_form_decode_to_the_same_images():
    step = DCGANStep(_dcgan_cfg())
    u8 = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    expected = u8.float() / 127.5 - 1
    assert expected.min() >= -1 and expected.max() <= 1
    for batch in (u8, {"image": u8, "targets": None}, (u8, torch.zeros(2)), [u8], u8.permute(0, 2, 3, 1), expected):
        assert torch.allclose(step._real_images(batch), expected)
    assert step._real_images(u8)[0, 0, 0, 0].item() == pytest.approx(u8[0, 0, 0, 0].item() / 127.5 - 1)


@pytest.mark.parametrize(
    "batch, message",
    [
        ({"img": torch.zeros(2, 3, 32, 32)}, "needs an 'image' key"),
        (torch.zeros(2, 3, 64, 64), r"expected images of shape \(B, 3, 32, 32\), got \(2, 3, 64, 64\)"),
        (torch.zeros(3, 32, 32), "expected images of shape"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int64), "uint8.*or float"),
        (torch.full((2, 3, 32, 32), 255.0), r"must be in \[-1, 1\], got values in \[255, 255\]"),
        ("not a tensor", "as a tensor"),
    ],
)
def test_bad_batches_are_clear_errors(batch, message):
    with pytest.raises(GANInputError, match=message):
        DCGANStep(_dcgan_cfg())._real_images(batch)
    assert issubclass(GANInputError, FaceganError)


def test_steps_check_the_model_family_and_the_factory_dispatches():
    with pytest.raises(FaceganError, match="DCGANStep trains model='dcgan'"):
        DCGANStep(_began_cfg())
    assert isinstance(build_gan_step(_began_cfg()), BEGANStep)
    assert isinstance(build_gan_step(_dcgan_cfg()), DCGANStep)
    assert isinstance(DCGANStep(_dcgan_cfg()), Step) and isinstance(BEGANStep(_began_cfg()), Step)


# ----------------------------------------------------------------------------- sampling and state
def test_same_seed_same_networks_and_fixed_noise_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = BEGANStep(_began_cfg()), BEGANStep(_began_cfg())
    assert torch.equal(torch.get_rng_state(), before)
    for (name, pa), pb in zip(a.generator.state_dict().items(), b.generator.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert torch.equal(a.fixed_noise, b.fixed_noise) and a.fixed_noise.shape == (16, 16)
    assert a.interpolation_ends.shape == (2, 2, 16)
    other = BEGANStep(dataclasses.replace(_began_cfg(), seed=1))
    assert not torch.equal(other.fixed_noise, a.fixed_noise)


def test_sample_is_reproducible_bounded_and_leaves_training_state_alone():
    step = DCGANStep(_dcgan_cfg())
    buffers = {k: v.clone() for k, v in step.generator.state_dict().items()}
    images = step.sample(5, generator=torch.Generator().manual_seed(0), batch_size=2)
    again = step.sample(5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, 3, 32, 32) and torch.allclose(images, again, atol=1e-6)
    assert images.min() >= -1 and images.max() <= 1
    assert step.generator.training  # restored after sampling in eval mode
    for key, value in step.generator.state_dict().items():
        assert torch.equal(value, buffers[key]), f"sampling changed {key}"


def test_interpolation_strips_run_from_z0_to_z1():
    step = BEGANStep(_began_cfg())
    z0, z1 = torch.rand(2, 16) * 2 - 1, torch.rand(2, 16) * 2 - 1
    strips = step.interpolate(z0, z1, steps=5)
    assert strips.shape == (10, 3, 32, 32)
    ends = step._generate(step.generator, torch.cat([z0, z1]))
    assert torch.allclose(strips[0], ends[0], atol=1e-5) and torch.allclose(strips[4], ends[2], atol=1e-5)
    assert torch.allclose(strips[5], ends[1], atol=1e-5) and torch.allclose(strips[9], ends[3], atol=1e-5)
    assert step.interpolate(z0[0], z1[0], steps=3).shape == (3, 3, 32, 32)


def test_visualize_uses_the_ema_generator_when_there_is_one():
    step = DCGANStep(_dcgan_cfg())
    ctx = _context(step)
    raw = step.visualize(0)
    assert set(raw) == {"samples", "interpolation"}
    assert raw["samples"].shape == (16, 3, 32, 32) and raw["interpolation"].shape == (16, 3, 32, 32)
    import copy

    ema = copy.deepcopy(step.generator).eval()
    torch.nn.init.zeros_(ema.to_image[0].weight)
    torch.nn.init.zeros_(ema.to_image[0].bias)
    ctx.ema = {"generator": ema}
    assert torch.count_nonzero(step.visualize(0)["samples"]) == 0
    assert torch.count_nonzero(step.sample(3)) == 0
    assert torch.count_nonzero(raw["samples"]) > 0


def test_state_dict_round_trip_carries_k_and_fixed_noise():
    step = BEGANStep(_began_cfg(k_init=0.25))
    step.k = 0.125
    state = step.state_dict()
    assert state["k"] == 0.125
    fresh = BEGANStep(_began_cfg())
    fresh.fixed_noise = torch.zeros_like(fresh.fixed_noise)
    fresh.load_state_dict(state)
    assert fresh.k == 0.125 and torch.equal(fresh.fixed_noise, step.fixed_noise)


# ----------------------------------------------------------------------------- single steps
def test_dcgan_step_splits_the_batch_over_critic_updates():
    step = DCGANStep(_dcgan_cfg(loss="wgan-gp", n_critic=2))
    assert step.config.dcgan.d_norm == "layer" and step.config.dcgan.betas == (0.0, 0.9)
    _context(step)
    seen = []
    step.discriminator.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    real = blobs(8)
    before_g = [p.clone() for p in step.generator.parameters()]
    before_d = {k: p.clone() for k, p in step.discriminator.named_parameters()}
    metrics = step.train_step(real, 0)
    # Per critic update: real part, fakes, interpolates; then the generator update on fakes.
    assert [len(x) for x in seen] == [4] * 7
    assert torch.equal(seen[0], real[:4]) and torch.equal(seen[3], real[4:])
    assert torch.equal(seen[4], seen[6])  # the generator update reuses the last critic update's fakes
    assert {"d_loss", "g_loss", "d_real", "d_fake", "gp", "wasserstein", "grad_norm_d", "grad_norm_g"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()) and metrics["gp"] > 0
    assert all(not torch.equal(a, b) for a, b in zip(before_g, step.generator.parameters()))
    # Every critic weight moves, except the output bias: E[D(G(z))] - E[D(x)] and the penalty do
    # not depend on it, so its gradient is exactly zero.
    unchanged = [k for k, p in step.discriminator.named_parameters() if torch.equal(before_d[k], p)]
    assert unchanged == ["head.bias"]
    with pytest.raises(GANInputError, match="cannot be split over n_critic=2"):
        step.train_step(real[:1], 1)


def test_began_step_updates_k_by_the_controller_rule():
    step = BEGANStep(_began_cfg(k_init=0.5, gamma=0.7, lambda_k=0.01))
    _context(step)
    metrics = step.train_step(blobs(4), 0)
    expected_k = 0.5 + 0.01 * (0.7 * metrics["loss_real"] - metrics["loss_fake"])
    assert step.k == pytest.approx(min(1.0, max(0.0, expected_k))) and metrics["k"] == step.k
    assert metrics["m_global"] == pytest.approx(metrics["loss_real"] + abs(0.7 * metrics["loss_real"] - metrics["loss_fake"]))
    assert metrics["d_loss"] == pytest.approx(metrics["loss_real"] - 0.5 * metrics["loss_fake"], rel=1e-5)
    halving = BEGANStep(_began_cfg(lr_halve_every=10))
    assert [halving.learning_rate(s) for s in (0, 9, 10, 25)] == [1e-3, 1e-3, 5e-4, 2.5e-4]


# ----------------------------------------------------------------------------- under the Trainer
def test_dcgan_trains_under_the_trainer_on_dict_batches(tmp_path):
    cfg = _dcgan_cfg()
    result = Trainer(DCGANStep(cfg), DictFaces(), _trainer_config(tmp_path), {"gan": to_dict(cfg)}).fit()
    assert result["global_step"] == 30
    rows = _rows(tmp_path)
    keys = ("d_loss", "g_loss", "grad_norm_d", "grad_norm_g")
    assert len(rows) == 30 and all(isinstance(r[k], float) for r in rows for k in keys)  # "nan" would be a str
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == [f"{kind}_{s:07d}.png" for kind in ("interpolation", "samples") for s in (15, 30)]
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert set(state["modules"]) == {"generator", "discriminator"} and "generator" in state["ema"]
    assert state["step_state"]["fixed_noise"].shape == (16, 100)


def test_wgan_gp_trains_under_the_trainer(tmp_path):
    cfg = _dcgan_cfg(loss="wgan-gp", n_critic=2)
    Trainer(DCGANStep(cfg), TensorDataset(blobs(32)), _trainer_config(tmp_path, max_steps=15, sample_every=0), {}).fit()
    rows = _rows(tmp_path)
    assert len(rows) == 15 and all(r["gp"] >= 0 and isinstance(r["wasserstein"], float) for r in rows)
    # The critic learns to separate real from fake: its Wasserstein estimate grows.
    assert rows[-1]["wasserstein"] > rows[0]["wasserstein"]


def _began_run(path, **overrides):
    cfg = _began_cfg(k_init=0.3, gamma=0.75, lambda_k=0.01)
    config = _trainer_config(path, **{"max_steps": 12, "sample_every": 6, "checkpoint_every": 0, **overrides})
    return Trainer(BEGANStep(cfg), TensorDataset(blobs(20)), config, {"gan": to_dict(cfg)}).fit()


def test_began_checkpoints_k_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    _began_run(tmp_path / "full")
    _began_run(tmp_path / "split", max_steps=7)
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")["step_state"]["k"] != 0.3
    _began_run(tmp_path / "split", resume=True)
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "latest.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")
    assert full["global_step"] == split["global_step"] == 12
    assert full["step_state"]["k"] == split["step_state"]["k"]
    for part in ("generator", "discriminator"):
        for key, value in full["modules"][part].items():
            assert torch.equal(value, split["modules"][part][key]), f"{part}.{key}"
    for key, value in full["ema"]["generator"].items():
        assert torch.equal(value, split["ema"]["generator"][key]), f"ema {key}"
    full_rows, split_rows = _rows(tmp_path / "full"), _rows(tmp_path / "split")
    assert [r["k"] for r in full_rows] == [r["k"] for r in split_rows]
    assert all(0.0 <= r["k"] <= 1.0 and r["m_global"] > 0 for r in full_rows)
    samples = sorted(p.name for p in (tmp_path / "full" / "samples").iterdir())
    assert samples == [f"{kind}_{s:07d}.png" for kind in ("interpolation", "reconstruction", "samples") for s in (6, 12)]


def test_began_convergence_measure_falls_on_an_easy_dataset(tmp_path):
    # 80 steps are enough on 32 px blobs: M_global falls from ~0.84 to ~0.25 (five seeds checked).
    step = BEGANStep(_began_cfg())
    data = blobs(128)
    before = step.sample(64, generator=torch.Generator().manual_seed(0))
    config = _trainer_config(tmp_path, max_steps=80, sample_every=0, checkpoint_every=0, ema_decay=0.0, ema_modules=())
    Trainer(step, TensorDataset(data), config, {}).fit()
    m_global = [r["m_global"] for r in _rows(tmp_path)]
    first, last = statistics.mean(m_global[:20]), statistics.mean(m_global[-20:])
    assert last < 0.6 * first, (first, last)
    # M_global alone would also fall if only the autoencoder learned; the generator must move too:
    # its mean image approaches the data's (dark background, bright middle).
    after = step.sample(64, generator=torch.Generator().manual_seed(0))
    target = data.mean(0)
    gap_before, gap_after = (before.mean(0) - target).abs().mean(), (after.mean(0) - target).abs().mean()
    assert gap_after < 0.5 * gap_before, (float(gap_before), float(gap_after))
