"""ONNX export of a network, with its preprocessing in the file and a check against PyTorch.

    path = export_onnx(wrapper, example, "model.onnx", output_names, metadata)
    read_metadata("model.onnx")   # {"kind": "...", "input_size": 64, "value_range": [-1, 1], ...}

Each family wraps its network in a module of one input ("images" or "latent") with a dynamic
batch dimension and a flat tuple of outputs, writes what a deployment needs to prepare that
input into `metadata`, and calls `export_onnx`. The file is compared with eager PyTorch on the
family's own inputs before it is written (`ExportCheck`); a file outside the tolerance is not
written. `onnx`, `onnxscript` and `onnxruntime` are the `export` extra: without them the
functions here say what to install.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.checkpoint import atomic_write_bytes
from engine.errors import FaceganError

__all__ = [
    "ClampedImages",
    "METADATA_KEY_PREFIX",
    "ExportCheck",
    "ExportError",
    "base_metadata",
    "export_onnx",
    "onnx_session",
    "read_metadata",
    "require_onnx",
]

# Every metadata entry facegan writes; values are JSON, so numbers and lists survive the trip.
METADATA_KEY_PREFIX = "facegan."
RTOL, ATOL = 1e-3, 1e-4


class ClampedImages(nn.Module):
    """A generator as facegan's own sampling uses it: float images clamped to [-1, 1] (BEGAN's
    decoder and the SR generator end without a tanh)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.generator(inputs).float().clamp(-1.0, 1.0)


class ExportError(FaceganError, RuntimeError):
    """The export tools are missing, the network cannot be exported, or the file disagrees with PyTorch."""


def require_onnx():
    """(onnx, onnxruntime), or an ExportError that says how to install them."""
    missing = []
    modules = {}
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            modules[name] = __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'facegan[export]' "
                          "(onnx, onnxscript and onnxruntime)")
    return modules["onnx"], modules["onnxruntime"]


def onnx_session(model: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session of a file (or its bytes) on `threads` threads (default: torch's)."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are not ours
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes for unreadable or invalid files
        where = "the exported model" if isinstance(model, bytes) else str(model)
        raise ExportError(f"onnxruntime cannot open {where}: {exc}") from exc


@dataclass
class ExportCheck:
    """How an exported file compares with the PyTorch network it came from, on one batch."""

    batch: int
    threads: int
    max_abs: dict[str, float] = field(default_factory=dict)  # per output
    max_rel: dict[str, float] = field(default_factory=dict)  # |onnx - torch| / |torch| where |torch| > atol
    within: dict[str, bool] = field(default_factory=dict)  # |onnx - torch| <= atol + rtol * |torch| everywhere
    torch_images_per_s: float = 0.0
    onnx_images_per_s: float = 0.0
    rtol: float = RTOL
    atol: float = ATOL

    @property
    def passed(self) -> bool:
        return all(self.within.values())

    @property
    def speed_ratio(self) -> float:
        """onnxruntime images/s over eager PyTorch images/s on the same threads."""
        return self.onnx_images_per_s / self.torch_images_per_s if self.torch_images_per_s else float("nan")

    def lines(self) -> list[str]:
        worst_abs = max(self.max_abs.values())
        worst_rel = max(self.max_rel.values())
        lines = [f"checked against PyTorch on a batch of {self.batch}: largest difference {worst_abs:.3g} absolute, "
                 f"{worst_rel:.3g} relative over {len(self.max_abs)} outputs "
                 f"({'within' if self.passed else 'OUTSIDE'} rtol={self.rtol:g}, atol={self.atol:g})"]
        lines += [f"  {name}: {self.max_abs[name]:.3g} abs, {self.max_rel[name]:.3g} rel"
                  for name in self.max_abs if not self.within[name]]
        if self.torch_images_per_s:
            lines.append(f"speed on {self.threads} CPU thread(s), batch {self.batch}: onnxruntime "
                         f"{self.onnx_images_per_s:.1f} images/s, PyTorch {self.torch_images_per_s:.1f} images/s "
                         f"({self.speed_ratio:.2f}x)")
        return lines

    def to_dict(self) -> dict:
        return {"batch": self.batch, "threads": self.threads, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "within": self.within, "passed": self.passed, "rtol": self.rtol, "atol": self.atol,
                "torch_images_per_s": self.torch_images_per_s, "onnx_images_per_s": self.onnx_images_per_s,
                "speed_ratio": self.speed_ratio}


def _as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def _compare(session, module: nn.Module, inputs: torch.Tensor, input_name: str, output_names: Sequence[str],
             rtol: float, atol: float) -> ExportCheck:
    check = ExportCheck(batch=int(inputs.shape[0]), threads=torch.get_num_threads(), rtol=rtol, atol=atol)
    with torch.no_grad():
        expected = [t.float().numpy() for t in _as_tuple(module(inputs))]
    got = session.run(list(output_names), {input_name: inputs.numpy()})
    for name, want, have in zip(output_names, expected, got):
        if want.shape != have.shape:
            raise ExportError(f"output {name!r}: onnxruntime gives shape {have.shape}, PyTorch {want.shape}")
        diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        scale = np.abs(want.astype(np.float64))
        big = scale > atol
        check.max_abs[name] = float(diff.max()) if diff.size else 0.0
        check.max_rel[name] = float((diff[big] / scale[big]).max()) if big.any() else 0.0
        check.within[name] = bool(np.all(diff <= atol + rtol * scale)) and bool(np.isfinite(have).all())
    return check


def _images_per_second(run, batch: int, min_seconds: float, rounds: int = 3) -> float:
    run()  # warm-up: allocations, oneDNN primitive creation, onnxruntime's first-run planning
    best = 0.0
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while True:
            run()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds / rounds:
                break
        best = max(best, count * batch / elapsed)
    return best


def export_onnx(module: nn.Module, inputs: torch.Tensor, path: str | Path, output_names: Sequence[str],
                metadata: dict[str, Any], input_name: str = "images", rtol: float = RTOL, atol: float = ATOL,
                time_seconds: float = 0.0) -> ExportCheck:
    """Export `module` (eval mode, one input with a dynamic batch dimension, a tuple of outputs)
    to `path` with `metadata` (JSON values under "facegan.<key>"), after checking onnxruntime's
    outputs on `inputs` against PyTorch's within `rtol`/`atol`. With `time_seconds` > 0 it also
    measures both on `inputs` for about that long each. Returns the check; the file is written
    only when it passes."""
    onnx, _ = require_onnx()
    module = module.eval()
    path = Path(path)
    if inputs.shape[0] < 2:
        raise ExportError("the check batch needs at least 2 inputs, so that the batch dimension stays dynamic")
    # The exporter and its optimiser log every pass at INFO, which would drown the check's lines.
    for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        program = torch.onnx.export(
            module, (inputs,), dynamo=True, input_names=[input_name], output_names=list(output_names),
            dynamic_shapes=({0: torch.export.Dim("batch")},), optimize=True, verbose=False)
    except Exception as exc:  # the exporter raises many kinds (torch.export, onnxscript); all mean "cannot export"
        raise ExportError(f"PyTorch could not export the network to ONNX: {type(exc).__name__}: {exc}") from exc
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {METADATA_KEY_PREFIX + k: json.dumps(v) for k, v in metadata.items()})
    proto.producer_name = "facegan"
    data = proto.SerializeToString()
    session = onnx_session(data)
    check = _compare(session, module, inputs, input_name, output_names, rtol, atol)
    if not check.passed:
        raise ExportError(f"{path} not written: onnxruntime disagrees with PyTorch\n" + "\n".join(check.lines()))
    if time_seconds > 0:
        with torch.no_grad():
            check.torch_images_per_s = _images_per_second(lambda: module(inputs), check.batch, time_seconds)
        feed = {input_name: inputs.numpy()}
        check.onnx_images_per_s = _images_per_second(lambda: session.run(None, feed), check.batch, time_seconds)
    atomic_write_bytes(path, data)
    return check


def base_metadata(kind: str, checkpoint: str | Path, step: int, used_ema: bool) -> dict[str, Any]:
    """What every export records: its kind, where it came from, and the facegan that wrote it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        facegan_version = version("facegan")
    except PackageNotFoundError:  # run from a source tree that was never installed
        facegan_version = "unknown"
    return {"kind": kind, "facegan_version": facegan_version, "checkpoint": Path(checkpoint).name,
            "checkpoint_step": int(step), "weights": "ema" if used_ema else "raw", "layout": "NCHW",
            "dynamic_axes": {"0": "batch"}}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The facegan metadata of an exported file, its JSON values decoded."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    props = onnx_session(path).get_modelmeta().custom_metadata_map
    return {k[len(METADATA_KEY_PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(METADATA_KEY_PREFIX)}
