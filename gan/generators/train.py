"""One face-generator run: config -> aligned faces -> step -> the engine's Trainer."""
from __future__ import annotations

import logging
from pathlib import Path

from data_prep.sources import LATER_SOURCE_DEFAULTS
from engine.config import save_config, to_dict
from engine.trainer import Trainer, check_run_folder
from gan.generators.config import GANRunConfig
from gan.generators.data import build_gan_dataset
from gan.generators.step import build_gan_step

__all__ = ["train", "run_record"]

log = logging.getLogger(__name__)

# Split settings GANDataConfig gained in facegan 0.2 (from SourceConfig), at their defaults. A run
# records its data section without them while they keep these values, so that a run begun with
# 0.1 resumes as the same configuration.
_SPLIT_DEFAULTS = {"test_fraction": 0.0, "val_fraction": 0.0, "split_seed": 0, **LATER_SOURCE_DEFAULTS}


def run_record(config: GANRunConfig) -> dict:
    """What a checkpoint records of the run (and what its resume fingerprint covers)."""
    data = {k: v for k, v in to_dict(config.data).items() if not (k in _SPLIT_DEFAULTS and v == _SPLIT_DEFAULTS[k])}
    return {"gan": to_dict(config.gan), "data": data}


def train(config: GANRunConfig) -> dict:
    """Build the data, the step and the Trainer, run it, and return the Trainer's result."""
    check_run_folder(config.trainer)  # before any face is aligned
    out_dir = Path(config.trainer.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    dataset = build_gan_dataset(config.data, config.gan.image_size, out_dir, progress=config.trainer.progress)
    step = build_gan_step(config.gan)
    log.info("training %s at %d px on %d faces from %s", config.gan.model, config.gan.image_size, len(dataset),
             config.data.source)
    return Trainer(step, dataset, config.trainer, run_record(config)).fit()
