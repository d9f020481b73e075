"""The trainer's guarantees, checked on a tiny step that uses every source of randomness a
real GAN step uses (shuffled data, noise drawn in the step, dropout) plus EMA."""
import os
import json
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from engine.checkpoint import load_checkpoint
from engine.trainer import NonFiniteError, ResumeError, Trainer, TrainerConfig


class ToyStep:
    def __init__(self, lr: float = 0.05, nan_at: int | None = None, sigint_at: int | None = None):
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.nan_at = nan_at
        self.sigint_at = sigint_at
        self.calls = 0  # extra state that must survive a resume

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"net": self.opt}

    def setup(self, ctx):
        self.ctx = ctx

    def train_step(self, batch, step):
        x, y = batch
        x = x + 0.01 * torch.randn_like(x)
        with self.ctx.autocast():
            loss = ((self.ctx.models["net"](x) - y) ** 2).mean()
        if self.nan_at is not None and step == self.nan_at:
            loss = loss * float("nan")
        grad_norm = self.ctx.optimize("net", loss)
        self.calls += 1
        if self.sigint_at is not None and step == self.sigint_at:
            os.kill(os.getpid(), signal.SIGINT)
        return {"loss": float(loss.detach()), "grad_norm": grad_norm}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]

    def visualize(self, step):
        return {"weights": self.net[0].weight.detach().view(1, 1, 16, 4)}


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


def _config(tmp_path, **overrides):
    base = dict(out_dir=str(tmp_path), max_steps=12, batch_size=8, seed=3, deterministic=True,
                ema_decay=0.9, ema_modules=("net",), log_every=1, checkpoint_every=5, progress=False,
                tensorboard=False, sample_every=4)
    base.update(overrides)
    return TrainerConfig(**base)


def _final_weights(path):
    state = load_checkpoint(path / "checkpoints" / "latest.pt")
    return state["modules"]["net"], state["ema"]["net"], state["step_state"]


def _assert_same(a, b):
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    full = Trainer(ToyStep(), _data(), _config(tmp_path / "full"), {"model": "toy"}).fit()
    assert full["global_step"] == 12
    # 12 steps of batch 8 over 50 samples cross epoch boundaries (6 batches per epoch).
    Trainer(ToyStep(), _data(), _config(tmp_path / "split", max_steps=7), {"model": "toy"}).fit()
    resumed = Trainer(ToyStep(), _data(), _config(tmp_path / "split", resume=True), {"model": "toy"}).fit()
    assert resumed["global_step"] == 12
    net_a, ema_a, state_a = _final_weights(tmp_path / "full")
    net_b, ema_b, state_b = _final_weights(tmp_path / "split")
    _assert_same(net_a, net_b)
    _assert_same(ema_a, ema_b)
    assert state_a == state_b == {"calls": 12}


def test_resume_forgets_steps_logged_after_the_checkpoint(tmp_path):
    # A run killed at step 7 has logged steps 6-7 past its step-5 checkpoint; the resume
    # logs them again, so metrics.jsonl must hold every step exactly once.
    Trainer(ToyStep(), _data(), _config(tmp_path, max_steps=7, checkpoint_every=5), {}).fit()
    checkpoints = tmp_path / "checkpoints"
    state = load_checkpoint(checkpoints / "latest.pt")
    assert state["global_step"] == 7
    # Roll the checkpoint back to step 5, as if the process died before saving step 7.
    Trainer(ToyStep(), _data(), _config(tmp_path / "five", max_steps=5), {}).fit()
    (checkpoints / "latest.pt").write_bytes((tmp_path / "five" / "checkpoints" / "latest.pt").read_bytes())
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "split": "tr')  # a line cut short by the kill
    Trainer(ToyStep(), _data(), _config(tmp_path, resume=True, tensorboard=True), {}).fit()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, 13))


def test_ctrl_c_saves_after_the_current_step_and_resumes_exactly(tmp_path):
    Trainer(ToyStep(), _data(), _config(tmp_path / "full"), {}).fit()
    result = Trainer(ToyStep(sigint_at=2), _data(), _config(tmp_path / "int"), {}).fit()
    assert result["status"] == "interrupted" and result["global_step"] == 3
    assert load_checkpoint(tmp_path / "int" / "checkpoints" / "latest.pt")["global_step"] == 3
    Trainer(ToyStep(), _data(), _config(tmp_path / "int", resume=True), {}).fit()
    _assert_same(_final_weights(tmp_path / "full")[0], _final_weights(tmp_path / "int")[0])


def test_changed_config_is_refused_unless_forced(tmp_path):
    Trainer(ToyStep(), _data(), _config(tmp_path, max_steps=3), {"lr": 0.05}).fit()
    with pytest.raises(ResumeError, match="--force"):
        Trainer(ToyStep(), _data(), _config(tmp_path, resume=True), {"lr": 0.01}).fit()
    with pytest.raises(ResumeError, match="--force"):
        Trainer(ToyStep(), _data(), _config(tmp_path, resume=True, batch_size=4), {"lr": 0.05}).fit()
    forced = Trainer(ToyStep(), _data(), _config(tmp_path, resume=True, force_resume=True), {"lr": 0.01}).fit()
    assert forced["global_step"] == 12


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ResumeError, match="no checkpoint"):
        Trainer(ToyStep(), _data(), _config(tmp_path, resume=True), {}).fit()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteError, match="step 8.*last good checkpoint"):
        Trainer(ToyStep(nan_at=7), _data(), _config(tmp_path), {}).fit()
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert state["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in state["modules"]["net"].values())


def test_nan_weights_are_caught(tmp_path):
    class PoisonStep(ToyStep):
        def train_step(self, batch, step):
            metrics = super().train_step(batch, step)
            if step == 1:
                with torch.no_grad():
                    self.net[0].weight[0, 0] = float("inf")
            return metrics

    with pytest.raises(NonFiniteError, match="weight net.0.weight"):
        Trainer(PoisonStep(), _data(), _config(tmp_path), {}).fit()


def test_logs_and_sample_grids(tmp_path):
    Trainer(ToyStep(), _data(), _config(tmp_path, max_steps=8), {}).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9)) and all("grad_norm" in r for r in rows)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["weights_0000004.png", "weights_0000008.png"]


def test_batch_larger_than_dataset_is_a_clear_error(tmp_path):
    from engine.errors import FaceganError

    with pytest.raises(FaceganError, match="fewer than one batch"):
        Trainer(ToyStep(), _data(), _config(tmp_path, batch_size=64), {}).fit()


def test_loss_curves_are_plotted(tmp_path):
    Trainer(ToyStep(), _data(), _config(tmp_path, max_steps=6), {}).fit()
    from PIL import Image

    with Image.open(tmp_path / "curves.png") as image:
        assert image.width > 300 and image.height > 150


def test_time_budget_stops_and_saves(tmp_path):
    class SlowStep(ToyStep):
        def train_step(self, batch, step):
            import time

            time.sleep(0.05)
            return super().train_step(batch, step)

    result = Trainer(SlowStep(), _data(), _config(tmp_path, max_steps=1000, max_seconds=0.3), {}).fit()
    assert result["status"] == "time_budget" and 2 <= result["global_step"] < 1000
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["global_step"] == result["global_step"]


def test_budget_spent_follows_the_clock_and_ends_the_cosine_with_the_budget(tmp_path):
    from engine.schedules import learning_rate

    class ClockStep(ToyStep):
        def __init__(self):
            super().__init__()
            self.spent: list[float] = []

        def train_step(self, batch, step):
            import time

            time.sleep(0.03)
            self.spent.append(self.ctx.budget_spent())
            return super().train_step(batch, step)

    step = ClockStep()
    Trainer(step, _data(), _config(tmp_path / "timed", max_steps=1000, max_seconds=0.6), {}).fit()
    assert step.spent[0] < 0.2 and step.spent[-1] > 0.8
    assert all(0.0 <= b <= 1.0 for b in step.spent) and step.spent == sorted(step.spent)
    untimed = ClockStep()
    Trainer(untimed, _data(), _config(tmp_path / "untimed", max_steps=5), {}).fit()
    assert untimed.spent == [0.0] * 5
    # The cosine's progress is the larger of the step's and the clock's.
    cosine = dict(base_lr=1.0, schedule="cosine", warmup_steps=10, total_steps=1010, min_lr_ratio=0.1)
    assert learning_rate(510, **cosine) == pytest.approx(0.55)
    assert learning_rate(510, **cosine, budget_spent=1.0) == pytest.approx(0.1)
    assert learning_rate(510, **cosine, budget_spent=0.25) == pytest.approx(0.55)
    assert learning_rate(260, **cosine, budget_spent=0.5) == pytest.approx(0.55)


class DtypeStep(ToyStep):
    """Records the dtype the model computes in under ctx.autocast()."""

    def train_step(self, batch, step):
        with self.ctx.autocast():
            self.dtype = self.ctx.models["net"](batch[0]).dtype
        return super().train_step(batch, step)


def test_amp_on_a_cpu_uses_bfloat16_only_where_the_hardware_has_it(tmp_path, monkeypatch, caplog):
    import engine.device as device

    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: True)
    step = DtypeStep()
    before = step.net[0].weight.detach().clone()
    Trainer(step, _data(), _config(tmp_path / "bf16", amp=True, device="cpu", max_steps=3), {"model": "toy"}).fit()
    assert step.dtype is torch.bfloat16
    assert not any(s.is_enabled() for s in step.ctx.scalers.values())  # bfloat16 needs no loss scaling
    assert step.net[0].weight.dtype is torch.float32 and not torch.equal(step.net[0].weight, before)

    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: False)
    step = DtypeStep()
    with caplog.at_level("WARNING", logger="engine.trainer"):
        Trainer(step, _data(), _config(tmp_path / "fp32", amp=True, device="cpu", max_steps=3), {"model": "toy"}).fit()
    assert step.dtype is torch.float32
    assert "no native bfloat16" in caplog.text


def test_bfloat16_run_resumes_exactly(tmp_path, monkeypatch):
    import engine.device as device

    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: True)
    Trainer(ToyStep(), _data(), _config(tmp_path / "full", amp=True, device="cpu"), {"model": "toy"}).fit()
    Trainer(ToyStep(), _data(), _config(tmp_path / "split", amp=True, device="cpu", max_steps=7), {"model": "toy"}).fit()
    Trainer(ToyStep(), _data(), _config(tmp_path / "split", amp=True, device="cpu", resume=True), {"model": "toy"}).fit()
    for a, b in zip(_final_weights(tmp_path / "full")[:2], _final_weights(tmp_path / "split")[:2]):
        _assert_same(a, b)
