"""Damaged files get a clear answer, never a silent restart: rotated checkpoints, refused
overwrites, --resume auto, full disks, truncated logs and manifests, damaged cache shards."""
from __future__ import annotations

import errno
import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from engine.checkpoint import CheckpointError, atomic_write_text, load_checkpoint
from engine.errors import DiskFullError
from engine.trainer import ResumeError, Trainer, TrainerConfig


class LineStep:
    """A linear regression with noise drawn in the step: enough state to tell runs apart."""

    def __init__(self):
        torch.manual_seed(0)
        self.net = nn.Linear(3, 1)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.05)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"net": self.opt}

    def setup(self, ctx):
        self.ctx = ctx

    def train_step(self, batch, step):
        x, y = batch
        loss = ((self.ctx.models["net"](x + 0.01 * torch.randn_like(x)) - y) ** 2).mean()
        return {"loss": float(loss.detach()), "grad_norm": self.ctx.optimize("net", loss)}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _fit(out, **settings):
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    config = dict(out_dir=str(out), max_steps=12, batch_size=8, seed=2, deterministic=True, log_every=1,
                  checkpoint_every=5, progress=False, tensorboard=False)
    config.update(settings)
    return Trainer(LineStep(), TensorDataset(x, x.sum(1, keepdim=True)), TrainerConfig(**config), {"model": "line"}).fit()


def _weights(out):
    return load_checkpoint(out / "checkpoints" / "latest.pt")["modules"]["net"]


@pytest.mark.parametrize("damage", ["truncated", "zero bytes"])
def test_a_damaged_latest_checkpoint_resumes_from_the_previous_one(tmp_path, caplog, damage):
    _fit(tmp_path / "full", max_steps=14)
    run = tmp_path / "run"
    _fit(run)  # checkpoints at steps 5, 10 and 12: latest.pt is step 12, previous.pt step 10
    latest = run / "checkpoints" / "latest.pt"
    assert load_checkpoint(run / "checkpoints" / "previous.pt")["global_step"] == 10
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2] if damage == "truncated" else b"")
    with caplog.at_level("WARNING", logger="engine.trainer"):
        result = _fit(run, max_steps=14, resume=True)
    assert "latest.pt" in caplog.text and "resuming from" in caplog.text and "previous.pt" in caplog.text
    assert result["global_step"] == 14
    for key, value in _weights(tmp_path / "full").items():
        assert torch.equal(value, _weights(run)[key]), key
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 15))  # steps 11-12, logged before the damage, are logged once


def test_no_intact_checkpoint_is_an_error_naming_every_file_and_nothing_is_overwritten(tmp_path):
    _fit(tmp_path, max_steps=6)
    files = [tmp_path / "checkpoints" / name for name in ("latest.pt", "previous.pt")]
    for path in files:
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(ResumeError, match="latest.pt.*previous.pt"):
        _fit(tmp_path, resume=True)
    assert [path.read_bytes() for path in files] == [b"not a checkpoint"] * 2


def test_a_fresh_run_over_a_run_folder_is_refused_and_resume_auto_continues_it(tmp_path):
    result = _fit(tmp_path, max_steps=6, resume="auto")  # nothing to resume: it starts
    assert result["global_step"] == 6
    with pytest.raises(ResumeError, match="holds checkpoints of an earlier run"):
        _fit(tmp_path, max_steps=8)
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["global_step"] == 6
    assert _fit(tmp_path, max_steps=8, resume="auto")["global_step"] == 8


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    import engine.checkpoint

    _fit(tmp_path, max_steps=5)
    before = (tmp_path / "checkpoints" / "latest.pt").read_bytes()

    def full_disk(obj, handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine.checkpoint.torch, "save", full_disk)
    with pytest.raises(DiskFullError, match="no space left.*previous version of it is intact"):
        _fit(tmp_path, max_steps=9, resume=True)
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "latest.pt").read_bytes() == before
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # no temporary file left behind
    assert _fit(tmp_path, max_steps=9, resume=True)["global_step"] == 9


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys):
    import engine.checkpoint
    from transfer.cli import main

    def full_disk(obj, handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine.checkpoint.torch, "save", full_disk)
    code = main(["gan", "train", "--model", "dcgan", "--image-size", "32", "--out", str(tmp_path / "run"), "--steps", "2",
                 "--batch-size", "4", "--threads", "1", "--set", "data.synthetic_identities=4",
                 "--set", "gan.dcgan.g_channels=16", "--set", "gan.dcgan.d_channels=16", "--set", "trainer.progress=false"])
    err = capsys.readouterr().err
    assert code == 2 and "no space left on the device" in err and "Traceback" not in err


def test_a_full_disk_during_a_manifest_append_keeps_its_rows(tmp_path, monkeypatch):
    from data_prep.folder_job import ManifestAppender, read_rows

    path = tmp_path / "manifest.csv"
    with ManifestAppender(path, ["source", "output"]) as manifest:
        manifest.write([{"source": "a.jpg", "output": "a.png"}])
        monkeypatch.setattr(manifest._writer, "writerows", lambda rows: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        with pytest.raises(DiskFullError, match="complete rows are kept"):
            manifest.write([{"source": "b.jpg", "output": "b.png"}])
    assert read_rows(path) == [{"source": "a.jpg", "output": "a.png"}]


def test_a_line_cut_short_in_a_manifest_is_dropped_and_reported(tmp_path, caplog):
    from data_prep.folder_job import ManifestAppender, read_rows

    path = tmp_path / "manifest.csv"
    path.write_text("source,output\na.jpg,a.png\nb.jp")
    with caplog.at_level("WARNING", logger="data_prep.folder_job"):
        with ManifestAppender(path, ["source", "output"]) as manifest:
            manifest.write([{"source": "c.jpg", "output": "c.png"}])
    assert "cut short" in caplog.text
    assert [row["source"] for row in read_rows(path)] == ["a.jpg", "c.jpg"]


def test_a_line_cut_short_in_the_metrics_is_dropped_and_reported(tmp_path, caplog):
    _fit(tmp_path, max_steps=5)
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 6, "split": "tr')
    with caplog.at_level("WARNING", logger="engine.logging"):
        _fit(tmp_path, max_steps=7, resume=True)
    assert "1 line(s) cut short" in caplog.text
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == list(range(1, 8))


def test_a_damaged_cache_shard_and_a_stale_temporary_are_reported_and_rebuilt(tmp_path, caplog):
    from data_prep.cache import AlignedFaceCache, build_cache
    from data_prep.synthetic import SyntheticConfig, generate_synthetic, load_synthetic

    dataset = load_synthetic(generate_synthetic(tmp_path / "synth", SyntheticConfig(num_identities=4, images_per_identity=2,
                                                                                    image_size=32), progress=False))
    whole = build_cache(dataset, tmp_path / "whole", 16, shard_size=5, progress=False)
    cache_dir = tmp_path / "cache"
    stopped = []

    def stop_after_first(shard, count):
        if shard == 0:
            stopped.append(shard)
            raise KeyboardInterrupt  # an interrupted build: shard 0 recorded, the rest not

    with pytest.raises(KeyboardInterrupt):
        build_cache(dataset, cache_dir, 16, shard_size=5, progress=False, on_shard_done=stop_after_first)
    shard = cache_dir / "images-00000.u8"
    shard.write_bytes(shard.read_bytes()[:100])  # damaged after it was recorded
    (cache_dir / ".images-00001.u8.abcd1234.tmp").write_bytes(b"left by a kill")
    with caplog.at_level("WARNING"):
        rebuilt = build_cache(dataset, cache_dir, 16, shard_size=5, progress=False)
    assert "shard 0 is missing or cut short" in caplog.text and "removed 1 temporary file" in caplog.text
    assert not list(cache_dir.glob(".*.tmp"))
    assert torch.equal(rebuilt.get_batch(range(len(rebuilt))), AlignedFaceCache(whole.path).get_batch(range(len(whole))))


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import engine.checkpoint

    target = tmp_path / "index.json"
    atomic_write_text(target, "old")
    monkeypatch.setattr(engine.checkpoint.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O")))
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_an_empty_checkpoint_file_is_named_as_cut_short(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "x.pt")
