import os

import pytest
import torch

from engine.checkpoint import (CheckpointError, atomic_save, atomic_write_files, atomic_write_text, config_fingerprint,
                               load_checkpoint)
from engine.errors import DiskFullError


def test_atomic_save_roundtrip(tmp_path):
    state = {"weights": torch.arange(6.0).reshape(2, 3), "step": 7, "name": "x"}
    path = tmp_path / "sub" / "ckpt.pt"
    atomic_save(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["weights"], state["weights"]) and loaded["step"] == 7
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"], "no temporary file may be left behind"


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom during write")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"step": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_load_is_weights_only(tmp_path):
    # A pickled arbitrary object would run code on load; weights_only must refuse it.
    path = tmp_path / "evil.pt"
    torch.save({"obj": _Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(path)


class _Arbitrary:
    pass


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    atomic_write_text(tmp_path / "a.txt", "world")
    assert (tmp_path / "a.txt").read_text() == "world"


def test_atomic_writes_give_the_permissions_of_a_plain_write(tmp_path):
    import os

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "new.txt", "x")  # not mkstemp's private 0600
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    os.chmod(tmp_path / "new.txt", 0o640)
    atomic_write_text(tmp_path / "new.txt", "y")  # a replaced file keeps its permissions
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640


def test_config_fingerprint_is_order_independent_and_sensitive():
    a = config_fingerprint({"lr": 1e-3, "model": {"size": 64, "depth": 4}})
    b = config_fingerprint({"model": {"depth": 4, "size": 64}, "lr": 1e-3})
    c = config_fingerprint({"model": {"depth": 4, "size": 64}, "lr": 2e-3})
    assert a == b != c


def test_training_state_differences_names_each_changed_value():
    import torch

    from engine.checkpoint import training_state_differences

    def state():
        return {"global_step": 7, "modules": {"G": {"w": torch.arange(4.0)}},
                "optimizers": {"G": {"state": {0: {"step": torch.tensor(7.0)}}, "param_groups": [{"lr": float("nan")}]}}}

    compared, differences = training_state_differences(state(), state())
    assert compared == 3 and differences == []
    changed = state()
    weights = changed["modules"]["G"]["w"]
    weights[2] = torch.nextafter(weights[2], torch.tensor(9.0))  # one unit in the last place
    changed["optimizers"]["G"]["param_groups"][0]["lr"] = 0.1
    changed["global_step"] = 8
    _, differences = training_state_differences(state(), changed)
    assert differences == ["global_step 8 != 7", "modules/G/w differs", "optimizers/G/param_groups/0/lr differs"]
    retyped = state()
    retyped["modules"]["G"]["w"] = retyped["modules"]["G"]["w"].double()
    assert training_state_differences(state(), retyped)[1] == ["modules/G/w differs"]


def test_atomic_write_files_puts_every_file_on_disk_before_renaming_any(tmp_path, monkeypatch):
    (tmp_path / "b.png").write_bytes(b"old b")
    files = [(tmp_path / "a.png", b"new a"), (tmp_path / "sub" / "b.png", b"new sub b"), (tmp_path / "b.png", b"new b")]
    seen_at_sync = []
    real_sync = os.sync
    monkeypatch.setattr(os, "sync", lambda: (seen_at_sync.append(sorted(p.name for p in tmp_path.rglob("*.png"))),
                                             real_sync()))
    atomic_write_files(files)
    assert seen_at_sync == [["b.png"]], "one sync, before any target was renamed into place"
    assert [path.read_bytes() for path, _ in files] == [data for _, data in files]
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file may be left behind"


def test_atomic_write_files_failure_leaves_complete_files_and_no_temporaries(tmp_path, monkeypatch):
    (tmp_path / "b.png").write_bytes(b"old b")
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("b.png"):
            raise OSError(5, "input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="input/output"):
        atomic_write_files([(tmp_path / "a.png", b"new a"), (tmp_path / "b.png", b"new b"), (tmp_path / "c.png", b"c")])
    assert (tmp_path / "a.png").read_bytes() == b"new a"
    assert (tmp_path / "b.png").read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_atomic_write_files_on_a_full_disk_says_so_and_replaces_nothing(tmp_path, monkeypatch):
    import errno

    (tmp_path / "a.png").write_bytes(b"old a")
    monkeypatch.setattr(os, "sync", lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(DiskFullError, match="no space left"):
        atomic_write_files([(tmp_path / "a.png", b"new a"), (tmp_path / "b.png", b"b")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    assert (tmp_path / "a.png").read_bytes() == b"old a"
