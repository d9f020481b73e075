import pytest
import torch

from engine.device import choose_device, configure_threads
from engine.errors import FaceganError


def test_auto_and_cpu():
    assert choose_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is absent")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        choose_device("cuda")


def test_configure_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("FACEGAN_THREADS", "2")
        assert configure_threads() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_autocast_dtype_follows_the_hardware(monkeypatch):
    import engine.device as device

    assert device.autocast_dtype(torch.device("cuda")) is torch.float16
    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: True)
    assert device.autocast_dtype(torch.device("cpu")) is torch.bfloat16
    # Emulated bfloat16 runs slower than float32, so such a CPU gets no mixed precision.
    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: False)
    assert device.autocast_dtype(torch.device("cpu")) is None
