"""The command-line options commands share, declared once.

Every `... train` command declares the training flags with `add_training_flags` and builds its
run config with `run_config_from_args`, so a flag means the same setting in every family:

    --config NAME|FILE  a preset shipped with the package, or a YAML file
    --set KEY=VALUE     any setting by its dotted path (repeatable)
    --out               trainer.out_dir          --steps        trainer.max_steps
    --minutes           trainer.max_seconds / 60 --batch-size   trainer.batch_size
    --seed              trainer.seed             --device       trainer.device
    --threads           trainer.threads          --amp          trainer.amp
    --deterministic     trainer.deterministic    --resume       trainer.resume
    --force             trainer.force_resume

Settings are applied in this order: the dataclass defaults, the --config file, the flags above
and the command's own shortcuts, then --set. `--resume` without --config continues from the
run folder's own config.yaml.

Commands that run a trained model share `--batch-size --device --threads --raw --no-progress`
(`add_runtime_options`). The module only calls `parser.add_argument`: the parsers themselves
belong to the `cli` modules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from engine.config import load_config, to_dict
from engine.presets import presets_help, resolve_preset

__all__ = ["TRAINER_SECTION", "add_command", "add_training_flags", "training_overrides", "run_config_from_args",
           "add_runtime_options"]

T = TypeVar("T")

TRAINER_SECTION = "trainer"

_HELP = {
    "steps": "optimiser steps to train for (trainer.max_steps)",
    "minutes": "wall-clock training budget; the run stops, evaluates and saves when it is spent (trainer.max_seconds)",
    "batch_size": "global batch size, split over processes (trainer.batch_size)",
    "seed": "seed of the data order, augmentation and noise (trainer.seed)",
    "device": "auto, cpu, cuda or cuda:N (trainer.device)",
    "threads": "torch CPU threads (trainer.threads; default: $FACEGAN_THREADS or all cores)",
    "amp": "mixed precision (trainer.amp): float16 with loss scaling on CUDA; bfloat16 on a CPU with native "
           "bfloat16 (AVX512-BF16 or AMX); float32, with a warning, elsewhere",
    "deterministic": "bit-reproducible kernels, slower (trainer.deterministic)",
    "resume": "continue OUT's latest checkpoint exactly where it stopped (without --config: with OUT/config.yaml); "
              "`--resume auto` continues when OUT has a checkpoint and starts otherwise, for job schedulers that requeue "
              "the same command (trainer.resume)",
    "force": "with --resume: allow a changed configuration (trainer.force_resume)",
}


def add_command(subparsers, name: str, help: str, description: str):
    """A subcommand `name`: `help` is its line in the parent's list, `description` its --help text."""
    return subparsers.add_parser(name, help=help, description=description)


def add_training_flags(parser, presets_package: str, default_out: str, help: dict[str, str] | None = None) -> None:
    """Declare the shared training flags on `parser`; `help` replaces the text of some of them
    (by destination: "seed", "batch_size", ...) where a family gives them a sharper meaning."""
    texts = {**_HELP, **(help or {})}
    parser.add_argument("--config", help=presets_help(presets_package))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting by its dotted path (repeatable), e.g. trainer.max_steps=500")
    parser.add_argument("--out", help=f"run folder (trainer.out_dir; default {default_out})")
    parser.add_argument("--steps", type=int, help=texts["steps"])
    parser.add_argument("--minutes", type=float, help=texts["minutes"])
    parser.add_argument("--batch-size", type=int, help=texts["batch_size"])
    parser.add_argument("--seed", type=int, help=texts["seed"])
    parser.add_argument("--device", help=texts["device"])
    parser.add_argument("--threads", type=int, help=texts["threads"])
    parser.add_argument("--amp", action="store_true", help=texts["amp"])
    parser.add_argument("--deterministic", action="store_true", help=texts["deterministic"])
    parser.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"], help=texts["resume"])
    parser.add_argument("--force", action="store_true", help=texts["force"])
    parser.set_defaults(presets_package=presets_package)


def training_overrides(args) -> list[str]:
    """The shared flags that were given, as KEY=VALUE overrides of the trainer section."""
    minutes = getattr(args, "minutes", None)
    shortcuts = {
        "out_dir": getattr(args, "out", None),
        "max_steps": getattr(args, "steps", None),
        "max_seconds": minutes * 60 if minutes else None,
        "batch_size": getattr(args, "batch_size", None),
        "seed": getattr(args, "seed", None),
        "device": getattr(args, "device", None),
        "threads": getattr(args, "threads", None),
        "amp": True if getattr(args, "amp", False) else None,
        "deterministic": True if getattr(args, "deterministic", False) else None,
        "resume": getattr(args, "resume", False) or None,
        "force_resume": True if getattr(args, "force", False) else None,
    }
    return [f"{TRAINER_SECTION}.{key}={value}" for key, value in shortcuts.items() if value is not None]


def run_config_from_args(cls: type[T], args, shortcuts: dict[str, Any] | None = None,
                         late_overrides: list[str] | None = None) -> T:
    """The run config of a training command: defaults, --config, the shared flags and the
    command's `shortcuts` (dotted key -> value, None: not given), then --set."""
    overrides = training_overrides(args)
    overrides += [f"{key}={value}" for key, value in (shortcuts or {}).items() if value is not None]
    overrides += list(getattr(args, "overrides", None) or []) if late_overrides is None else list(late_overrides)
    return load_config(cls, config_file(cls, args), overrides)


def config_file(cls: type, args) -> Path | None:
    """The YAML file of --config; with --resume and no --config, the run folder's config.yaml."""
    if getattr(args, "config", None):
        return resolve_preset(args.config, args.presets_package)
    if getattr(args, "resume", False):
        out = Path(args.out) if getattr(args, "out", None) else Path(to_dict(cls())[TRAINER_SECTION]["out_dir"])
        if (out / "config.yaml").is_file():
            return out / "config.yaml"
    return None


def add_runtime_options(parser, *, batch_size: int | None = None, batch_help: str = "faces per forward pass",
                        device: str | None = "cpu", threads: bool = True, raw: bool = True, progress: bool = False) -> None:
    """Declare the options of a command that runs a model or a long job: `--batch-size` (when a
    default is given), `--device` (when a default is given), `--threads`, `--raw` (the trained
    weights instead of their EMA copy) and `--no-progress`."""
    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size, help=f"{batch_help} (default {batch_size})")
    if device is not None:
        parser.add_argument("--device", default=device, help=f"auto, cpu, cuda or cuda:N (default {device})")
    if threads:
        parser.add_argument("--threads", type=int, help="torch CPU threads (default: $FACEGAN_THREADS or all cores)")
    if raw:
        parser.add_argument("--raw", action="store_true", help="use the trained weights instead of their moving average (EMA)")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
