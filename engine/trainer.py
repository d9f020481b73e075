"""The one training loop of facegan.

The Trainer owns what every model family repeats: the data loop (seeded, sharded across ranks,
resumable mid-epoch), AMP, DistributedDataParallel wrapping, EMA copies, logging, sample grids,
checkpoints, resume, the NaN guard and Ctrl-C. Each family supplies a small `Step` object with
the maths of one training step; a reader learns this loop once and each model in its own step.

    step = DCGANStep(...)                       # a Step: modules, optimizers, train_step
    Trainer(step, dataset, TrainerConfig(out_dir="runs/x", max_steps=5000), run_config).fit()

A step receives a `StepContext` in `setup(ctx)`: it must run forward passes through
`ctx.models[name]` (the DDP-wrapped module when distributed), wrap them in `ctx.autocast()`, and
update weights with `ctx.optimize(name, loss)`, which handles gradient scaling, clipping and the
gradient-norm metric.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset

from engine.checkpoint import CheckpointError, atomic_save, config_fingerprint, newest_intact, remove_stale_temporaries
from engine.config import plain_data
from engine.device import autocast_dtype, choose_device, configure_threads
from engine.distributed import DistributedInfo, ResumableSampler, init_distributed
from engine.ema import ModelEMA
from engine.errors import FaceganError
from engine.faults import fault_point
from engine.logging import RunLogger, plot_curves
from engine.reproducibility import capture_rng_state, derive_seed, restore_rng_state, seed_everything

__all__ = ["Step", "SeededStep", "StepContext", "TrainerConfig", "Trainer", "NonFiniteError", "ResumeError",
           "checkpoint_files", "check_run_folder"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class NonFiniteError(FaceganError):
    """A loss or a weight became NaN/Inf; the run stopped and the last good checkpoint is kept."""


class ResumeError(FaceganError):
    """A resume was refused (no checkpoint, or a changed configuration without --force)."""


@runtime_checkable
class Step(Protocol):
    """What a model family supplies to the Trainer. `evaluate` and `visualize` are optional."""

    def modules(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, Optimizer]: ...

    def setup(self, ctx: "StepContext") -> None: ...

    def train_step(self, batch: Any, step: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainerConfig:
    out_dir: str = "runs/train"
    max_steps: int = 1000
    max_seconds: float = 0.0  # wall-clock budget for the loop (0: none); the run stops and saves when spent
    batch_size: int = 64  # global: split evenly across ranks
    num_workers: int = 0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = False  # mixed precision: float16 on CUDA, bfloat16 on CPUs with native bfloat16, else off
    threads: int | None = None
    ema_decay: float = 0.0  # 0 disables the EMA copies
    ema_modules: tuple[str, ...] = ()
    grad_clip: float = 0.0  # 0 disables clipping; the norm is logged either way
    log_every: int = 10
    sample_every: int = 0
    eval_every: int = 0
    checkpoint_every: int = 500
    best_metric: str = ""  # an evaluate() key; empty disables best.pt
    best_mode: str = "min"
    nan_check_every: int = 1
    progress: bool = True
    tensorboard: bool = True
    resume: bool | str = False  # True: continue OUT's checkpoint; "auto": continue it when there is one, else start
    force_resume: bool = False


# Changing these between a run and its resume does not change the maths of the steps taken.
_SCHEDULE_FIELDS = {
    "out_dir", "max_steps", "max_seconds", "num_workers", "threads", "log_every", "sample_every", "eval_every",
    "checkpoint_every", "progress", "tensorboard", "resume", "force_resume", "device", "nan_check_every",
}


def checkpoint_files(out_dir: str | Path) -> list[Path]:
    """The run's checkpoints a resume can start from, newest first: latest.pt, then previous.pt."""
    folder = Path(out_dir) / "checkpoints"
    return [folder / "latest.pt", folder / "previous.pt"]


def check_run_folder(config: TrainerConfig) -> bool:
    """Whether the run resumes: with `resume` True it must (a ResumeError without a checkpoint),
    with "auto" it does when the folder has a checkpoint; without, a folder that has checkpoints
    is refused, since starting over would overwrite an earlier run."""
    if config.resume not in (True, False, "auto"):
        raise FaceganError(f"trainer.resume must be true, false or auto, not {config.resume!r}")
    found = [path for path in checkpoint_files(config.out_dir) if path.exists()]
    if config.resume is True:
        if not found:
            raise ResumeError(f"--resume was given but there is no checkpoint in {Path(config.out_dir) / 'checkpoints'}")
        return True
    if config.resume == "auto":
        return bool(found)
    if found:
        raise ResumeError(
            f"{config.out_dir} holds checkpoints of an earlier run ({', '.join(p.name for p in found)}); continue it "
            "with --resume (--resume auto resumes when there is a checkpoint and starts otherwise), or give another --out")
    return False


class StepContext:
    """What a Step uses to run on the Trainer's device, precision and process group."""

    def __init__(self, device: torch.device, dist_info: DistributedInfo, amp: bool, grad_clip: float):
        self.device = device
        self.dist = dist_info
        self.amp_dtype = autocast_dtype(device) if amp else None
        self.amp = self.amp_dtype is not None
        self.grad_clip = grad_clip
        self.models: dict[str, nn.Module] = {}
        self.ema: dict[str, nn.Module] = {}
        self.optimizers: dict[str, Optimizer] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self._budget_spent = 0.0

    def budget_spent(self) -> float:
        """The share of this fit's wall-clock budget (trainer.max_seconds) spent before the current
        step, in [0, 1]; 0 without a budget. The Trainer sets it before every step from the slowest
        rank's clock, so every rank sees the same value. A resumed run gets a fresh budget, as the
        Trainer's time limit does."""
        return self._budget_spent

    def set_budget_spent(self, share: float) -> None:
        """For the Trainer: the share of the budget spent, as the next step will see it."""
        self._budget_spent = min(1.0, max(0.0, share))

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def optimize(self, name: str, loss: torch.Tensor, retain_graph: bool = False) -> float:
        """Backward `loss`, then step optimizer `name`; returns the gradient norm before clipping."""
        optimizer = self.optimizers[name]
        scaler = self.scalers[name]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward(retain_graph=retain_graph)
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        scaler.step(optimizer)
        scaler.update()
        return float(norm)


class SeededStep:
    """A base for steps that draw randomness of their own (noise, degradations, penalties).

    `setup` keeps the context and draws `seed_base` from the global RNG that the Trainer has just
    seeded: it follows the run's seed, is the same on every rank, and is the same on a resume
    (setup runs before the RNG state is restored). A step re-seeds `rng` (a generator on its
    device) from `seed_base`, the rank and the step, so a resumed run draws exactly what an
    uninterrupted one would, with no extra state. Subclasses build `self._optimizers`.
    """

    _optimizers: dict[str, Optimizer]

    def optimizers(self) -> dict[str, Optimizer]:
        return self._optimizers

    def setup(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.seed_base = int(torch.randint(0, 2**62, (1,)).item())
        self.rng = torch.Generator(device=ctx.device)


class Trainer:
    """Runs `step` over `dataset` for `config.max_steps` steps; see the module docstring."""

    def __init__(
        self,
        step: Step,
        dataset: Dataset,
        config: TrainerConfig,
        run_config: dict[str, Any] | None = None,
        collate_fn: Callable | None = None,
        legacy_run_configs: Sequence[dict[str, Any]] = (),
    ):
        self.step_impl = step
        self.dataset = dataset
        self.config = config
        self.run_config = run_config or {}
        # What an older facegan recorded for this same run: its checkpoints resume as this run's.
        self.legacy_run_configs = list(legacy_run_configs)
        self.collate_fn = collate_fn
        self.run_dir = Path(config.out_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.global_step = 0
        self.epoch = 0
        self.offset = 0  # samples of the current epoch this rank has consumed
        self.best_value: float | None = None
        self.last_metrics: dict[str, float] = {}
        self._stop_requested = False

    # ----------------------------------------------------------------------------- set-up
    def fingerprint(self, run_config: dict[str, Any] | None = None) -> str:
        maths = {k: v for k, v in asdict(self.config).items() if k not in _SCHEDULE_FIELDS}
        return config_fingerprint({"trainer": maths, "run": self.run_config if run_config is None else run_config})

    def _setup(self) -> None:
        cfg = self.config
        resuming = check_run_folder(cfg)
        remove_stale_temporaries(self.checkpoint_dir, recursive=False)
        configure_threads(cfg.threads)
        self.device = choose_device(cfg.device)
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.batch_size % self.dist.world_size:
            raise FaceganError(f"batch_size {cfg.batch_size} does not split evenly over {self.dist.world_size} processes")
        self.batch_per_rank = cfg.batch_size // self.dist.world_size
        # Same seed on every rank: replicas start identical; data sharding differs by rank.
        seed_everything(cfg.seed, cfg.deterministic)

        ctx = StepContext(self.device, self.dist, cfg.amp, cfg.grad_clip)
        modules = self.step_impl.modules()
        for name, module in modules.items():
            module.to(self.device)
            if self.dist.enabled and any(p.requires_grad for p in module.parameters()):
                device_ids = [self.device.index] if self.device.type == "cuda" else None
                module = nn.parallel.DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)
            ctx.models[name] = module
        self.ema = {name: ModelEMA(modules[name], cfg.ema_decay).to(self.device) for name in cfg.ema_modules if cfg.ema_decay > 0}
        ctx.ema = {name: ema.module for name, ema in self.ema.items()}
        ctx.optimizers = self.step_impl.optimizers()
        # Loss scaling guards float16's narrow exponent; bfloat16 has float32's and needs none.
        scaling = ctx.amp_dtype is torch.float16
        ctx.scalers = {name: torch.amp.GradScaler(self.device.type, enabled=scaling) for name in ctx.optimizers}
        if cfg.amp and self.dist.is_main:
            if ctx.amp:
                log.info("mixed precision: %s autocast on %s", str(ctx.amp_dtype).removeprefix("torch."), self.device)
            else:
                log.warning("mixed precision requested, but this %s has no native bfloat16 (AVX512-BF16 or AMX), "
                            "where it would run slower than float32: training in float32", self.device.type)
        self.ctx = ctx
        self.step_impl.setup(ctx)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main, tensorboard=cfg.tensorboard)
        self.sampler = ResumableSampler(len(self.dataset), seed=cfg.seed, rank=self.dist.rank, world_size=self.dist.world_size)
        if self.sampler.per_rank() < self.batch_per_rank:
            raise FaceganError(
                f"the dataset has {len(self.dataset)} samples, fewer than one batch of {self.batch_per_rank} per process"
            )
        if resuming:
            self._resume()
        elif self.dist.is_main:
            self.logger.rewind(-1)  # logs of an earlier attempt that died before its first checkpoint

    # ----------------------------------------------------------------------------- data
    def _batches(self) -> Iterator[Any]:
        """Endless batches; epoch and offset always describe what has been consumed."""
        while True:
            self.sampler.set_epoch(self.epoch, self.offset)
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_per_rank,
                sampler=self.sampler,
                num_workers=self.config.num_workers,
                collate_fn=self.collate_fn,
                drop_last=True,
                persistent_workers=False,
                generator=torch.Generator().manual_seed(derive_seed(self.config.seed, "loader", self.epoch, self.dist.rank)),
            )
            for batch in loader:
                self.offset += self.batch_per_rank
                yield batch
            self.epoch += 1
            self.offset = 0

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    # ----------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "global_step": self.global_step,
            "epoch": self.epoch,
            "offset": self.offset,
            "modules": {name: m.state_dict() for name, m in self.step_impl.modules().items()},
            "optimizers": {name: o.state_dict() for name, o in self.ctx.optimizers.items()},
            "scalers": {name: s.state_dict() for name, s in self.ctx.scalers.items()},
            "ema": {name: e.module.state_dict() for name, e in self.ema.items()},
            "step_state": self.step_impl.state_dict(),
            "rng": capture_rng_state(),
            "best_value": self.best_value,
            "metrics": self.last_metrics,
            "trainer_config": plain_data(asdict(self.config)),
            "run_config": plain_data(self.run_config),
            "fingerprint": self.fingerprint(),
        }

    def save(self, name: str = "latest") -> Path | None:
        """Write checkpoints/NAME.pt atomically; the latest.pt it replaces becomes previous.pt, so a
        latest.pt damaged later (a full disk, a copy) still leaves an intact one to resume from."""
        if not self.dist.is_main:
            return None
        path = self.checkpoint_dir / f"{name}.pt"
        atomic_save(self._state(), path, keep_previous=self.checkpoint_dir / "previous.pt" if name == "latest" else None)
        return path

    def _resume(self) -> None:
        try:
            path, state, damaged = newest_intact(checkpoint_files(self.run_dir), map_location=self.device)
        except CheckpointError as exc:
            raise ResumeError(f"cannot resume the run in {self.run_dir}: {exc}. Nothing was overwritten; move the "
                              "damaged files away to start over") from exc
        for problem in damaged:
            log.warning("%s; resuming from %s instead", problem, path)
        accepted = {self.fingerprint(), *(self.fingerprint(legacy) for legacy in self.legacy_run_configs)}
        if state.get("fingerprint") not in accepted and not self.config.force_resume:
            raise ResumeError(
                f"the configuration differs from the one {path} was trained with "
                f"(fingerprint {state.get('fingerprint')} vs {self.fingerprint()}); "
                "resume with the same settings, or pass --force to resume anyway"
            )
        for name, module in self.step_impl.modules().items():
            module.load_state_dict(state["modules"][name])
        for name, optimizer in self.ctx.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scaler in self.ctx.scalers.items():
            scaler.load_state_dict(state["scalers"][name])
        for name, ema in self.ema.items():
            ema.module.load_state_dict(state["ema"][name])
        self.step_impl.load_state_dict(state["step_state"])
        restore_rng_state(state["rng"])
        self.global_step = state["global_step"]
        self.epoch = state["epoch"]
        self.offset = state["offset"]
        self.best_value = state["best_value"]
        self.last_metrics = state["metrics"]
        self.logger.rewind(self.global_step)
        log.info("resumed from %s at step %d", path, self.global_step)

    # ----------------------------------------------------------------------------- guards
    def _check_finite(self, metrics: dict[str, float]) -> None:
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if not bad and self.config.nan_check_every and self.global_step % self.config.nan_check_every == 0:
            for name, module in self.step_impl.modules().items():
                for pname, param in module.named_parameters():
                    if not torch.isfinite(param).all():
                        bad.append(f"weight {name}.{pname}")
                        break
        if bad:
            latest = self.checkpoint_dir / "latest.pt"
            kept = f"the last good checkpoint is {latest}" if latest.exists() else "no checkpoint had been written yet"
            raise NonFiniteError(
                f"non-finite value at step {self.global_step + 1}: {', '.join(bad)}; training stopped and "
                f"nothing was saved after it; {kept}. Lower the learning rate or enable grad_clip, then resume."
            )

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_requested = True
        log.warning("Ctrl-C: finishing this step, saving a checkpoint, then stopping (Ctrl-C again to abort)")

    def request_stop(self) -> None:
        """Stop after the current step and save, as Ctrl-C does (for callers and tests)."""
        self._stop_requested = True

    # ----------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        self._setup()
        cfg = self.config
        previous_handler = None
        with contextlib.suppress(ValueError):  # signal handlers only install in the main thread
            previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        progress = _progress_bar(cfg.max_steps, self.global_step, enabled=cfg.progress and self.dist.is_main)
        batches = self._batches()
        stopped = "finished"
        started = time.perf_counter()
        try:
            while self.global_step < cfg.max_steps:
                batch = self._to_device(next(batches))
                metrics = self.step_impl.train_step(batch, self.global_step)
                self._check_finite(metrics)
                for name, ema in self.ema.items():
                    ema.update(self.step_impl.modules()[name], num_updates=self.global_step)
                self.global_step += 1
                self.last_metrics = metrics
                progress.update(1)
                step = self.global_step
                if cfg.log_every and step % cfg.log_every == 0:
                    progress.set_postfix({k: f"{v:.4g}" for k, v in list(metrics.items())[:4]})
                    self.logger.scalars(step, metrics)
                if self.dist.is_main and cfg.sample_every and step % cfg.sample_every == 0:
                    self._visualize(step)
                if self.dist.is_main and cfg.eval_every and step % cfg.eval_every == 0:
                    self._evaluate(step)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.save("latest")
                fault_point("trainer-step")
                reason = self._stop_reason(started)
                if reason:
                    stopped = reason
                    break
            if self.dist.is_main and cfg.eval_every and self.global_step % cfg.eval_every and stopped != "interrupted":
                self._evaluate(self.global_step)  # the final weights are always evaluated
            self.save("latest")
        finally:
            progress.close()
            self.logger.close()
            if self.dist.is_main and self.config.log_every:
                plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png",
                            smooth=max(1, min(25, self.global_step // 20)))
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
        return {
            "status": stopped,
            "global_step": self.global_step,
            "metrics": self.last_metrics,
            "seconds": time.perf_counter() - started,
            "checkpoint": str(self.checkpoint_dir / "latest.pt"),
        }

    def _stop_reason(self, started: float) -> str | None:
        """Why to stop after this step, if at all: Ctrl-C (or `request_stop`) on any rank, or the
        time budget spent on the slowest rank's clock. Under DDP the ranks decide together, with
        one all-reduce per step, so they stop after the same step (one that stopped alone would
        leave the others waiting in their next all-reduce) and see the same `budget_spent`."""
        cfg = self.config
        seconds, stop = time.perf_counter() - started, float(self._stop_requested)
        if self.dist.enabled:
            value = torch.tensor([seconds, stop], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
            seconds, stop = float(value[0]), float(value[1])
        if stop:
            self._stop_requested = True
            return "interrupted"
        if cfg.max_seconds:
            self.ctx.set_budget_spent(seconds / cfg.max_seconds)
            if seconds >= cfg.max_seconds:
                log.info("time budget of %.0f s spent at step %d; saving and stopping", cfg.max_seconds, self.global_step)
                return "time_budget"
        return None

    def _visualize(self, step: int) -> None:
        visualize = getattr(self.step_impl, "visualize", None)
        if visualize is not None:
            with torch.no_grad():
                self.logger.images(step, visualize(step))

    def _evaluate(self, step: int) -> None:
        evaluate = getattr(self.step_impl, "evaluate", None)
        if evaluate is None:
            return
        metrics = evaluate(step)
        if not metrics:  # nothing to evaluate on (a run without validation faces): no empty rows in the logs
            return
        self.logger.scalars(step, metrics, prefix="eval")
        key = self.config.best_metric
        if key and key in metrics:
            value = float(metrics[key])
            lower_is_better = self.config.best_mode == "min"
            better = self.best_value is None or (value < self.best_value if lower_is_better else value > self.best_value)
            if better:
                self.best_value = value
                self.save("best")


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", dynamic_ncols=True)
