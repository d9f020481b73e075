"""Run logging: JSONL metrics (always), TensorBoard scalars and images, PNG image grids.

Only the main rank writes; other ranks get a logger whose methods do nothing, so training
code never branches on the rank to log.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from engine.errors import DiskFullError
from engine.faults import FAULT_ENV, fault_point

__all__ = ["RunLogger", "save_image_grid"]

log = logging.getLogger(__name__)


def save_image_grid(images: torch.Tensor, path: Path | str, nrow: int = 8, value_range: tuple[float, float] = (-1.0, 1.0)) -> Path:
    """Save a (B,C,H,W) batch as one PNG grid; values are mapped from `value_range` to 0..255."""
    from PIL import Image
    from torchvision.utils import make_grid

    images = images.detach().float().cpu()
    low, high = value_range
    images = ((images - low) / (high - low)).clamp(0, 1)
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
    if array.shape[2] == 1:
        array = array[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


class RunLogger:
    """Writes metrics to `<run>/metrics.jsonl` and TensorBoard, and image grids to `<run>/samples/`."""

    def __init__(self, run_dir: Path | str, enabled: bool = True, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._tensorboard = tensorboard
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        self._open_writer(purge_step=None)

    def _open_writer(self, purge_step: int | None) -> None:
        if not self._tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge_step)
        except ImportError:  # tensorboard is a dependency, but a trimmed install may lack it
            log.warning("tensorboard is not installed; logging to metrics.jsonl only")

    def rewind(self, step: int) -> None:
        """Forget what was logged after `step`, as a resume from a checkpoint of that step must:
        an interrupted run may have logged steps past its last checkpoint, and they will be
        logged again. metrics.jsonl is rewritten atomically; TensorBoard purges them."""
        if not self.enabled:
            return
        from engine.checkpoint import atomic_write_text

        self._jsonl.close()
        path = self.run_dir / "metrics.jsonl"
        kept, broken, later = [], 0, 0
        for line in path.read_text().splitlines():
            try:
                row_step = json.loads(line).get("step", 0)
            except (json.JSONDecodeError, AttributeError):
                broken += 1  # a line cut short by the interruption
                continue
            if isinstance(row_step, (int, float)) and row_step <= step:
                kept.append(line)
            else:
                later += 1
        if broken or later:
            log.warning("%s: dropped %d line(s) cut short and %d row(s) logged after step %d, which the run logs "
                        "again", path, broken, later, max(step, 0))
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self._jsonl = open(path, "a", buffering=1)
        if self._writer is not None:
            self._writer.close()
            self._open_writer(purge_step=step + 1)

    def scalars(self, step: int, metrics: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        row: dict[str, Any] = {"step": step, "split": prefix}
        for name, value in metrics.items():
            value = float(value)
            row[name] = value if math.isfinite(value) else str(value)
            if self._writer is not None:
                self._writer.add_scalar(f"{prefix}/{name}", value, step)
        line = json.dumps(row) + "\n"
        try:
            if FAULT_ENV in os.environ:  # a crash test: leave half a line behind
                self._jsonl.write(line[: len(line) // 2])
                self._jsonl.flush()
                fault_point("metrics-line")
                line = line[len(line) // 2:]
            self._jsonl.write(line)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no space left on the device while logging to {self.run_dir / 'metrics.jsonl'}; "
                                    "the checkpoints are intact: free some space and resume") from exc
            raise

    def images(self, step: int, grids: dict[str, torch.Tensor], value_range: tuple[float, float] = (-1.0, 1.0)) -> list[Path]:
        if not self.enabled:
            return []
        paths = []
        for name, batch in grids.items():
            path = save_image_grid(batch, self.run_dir / "samples" / f"{name}_{step:07d}.png", value_range=value_range)
            paths.append(path)
            if self._writer is not None:
                from torchvision.utils import make_grid

                low, high = value_range
                grid = make_grid(((batch.detach().float().cpu() - low) / (high - low)).clamp(0, 1), nrow=8)
                self._writer.add_image(name, grid, step)
        return paths

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._writer is not None:
            self._writer.close()
        self._jsonl.close()


def plot_curves(metrics_jsonl: Path | str, out_png: Path | str, split: str = "train", smooth: int = 0) -> Path | None:
    """Plot every scalar of `split` in a metrics.jsonl against the step, one panel each, as a PNG.

    `smooth` > 1 overlays a running mean over that many points. Returns None when there is
    nothing to plot (an empty or missing file).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    path = Path(metrics_jsonl)
    if not path.is_file():
        return None
    series: dict[str, tuple[list[int], list[float]]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if row.get("split") != split:
            continue
        for key, value in row.items():
            if key in ("step", "split") or not isinstance(value, (int, float)):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(row["step"])
            values.append(float(value))
    if not series:
        return None
    columns = min(3, len(series))
    rows = -(-len(series) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False)
    for axis, (name, (steps, values)) in zip(axes.flat, sorted(series.items())):
        axis.plot(steps, values, linewidth=0.8, alpha=0.5 if smooth > 1 else 1.0)
        if smooth > 1 and len(values) >= smooth:
            kernel = [1.0 / smooth] * smooth
            import numpy as np

            axis.plot(steps[smooth - 1 :], np.convolve(values, kernel, mode="valid"), linewidth=1.4)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step", fontsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(series) :]:
        axis.axis("off")
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    plt.close(figure)
    return out_png
