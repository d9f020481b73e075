"""One super-resolution run: config -> HR faces (and held-out ones) -> SRStep -> the engine's Trainer."""
from __future__ import annotations

import logging
from pathlib import Path

from data_prep.selection import evenly_spaced
from data_prep.transforms import RandomHorizontalFlip
from data_prep.sources import LATER_SOURCE_DEFAULTS
from engine.config import save_config, to_dict, without_later_defaults
from engine.errors import FaceganError
from engine.trainer import Trainer, check_run_folder
from gan.sr.config import SRDataConfig, SRRunConfig
from gan.sr.step import SRStep

__all__ = ["build_sr_data", "train"]

log = logging.getLogger(__name__)


def build_sr_data(config: SRDataConfig, hr_size: int, out_dir: str | Path, progress: bool = True):
    """(training faces, held-out HR faces as (N, 3, S, S) uint8 or None), aligned at `hr_size`.

    Every source goes through `data_prep.sources`: opened (synthetic by default), aligned once
    at the HR size into the aligned-face cache, and split; training reads the cache's memory maps.
    """
    from data_prep.sources import aligned_cache, open_source

    out_dir = Path(out_dir)
    dataset = open_source(config, out_dir, min_image_size=hr_size)
    cache = aligned_cache(dataset, config, hr_size, out_dir, progress=progress)
    train_view = cache if config.split == "all" else cache.subset(split=config.split)
    if len(train_view) == 0:
        raise FaceganError(f"{config.source}: no faces in split {config.split!r} (use data.split=all)")
    eval_hr = None
    if config.eval_split != "none" and config.eval_images > 0:
        held_out = cache.subset(split=config.eval_split)
        if len(held_out) == 0:
            log.warning("%s has no faces in split %r: no periodic evaluation or sample strips", config.source, config.eval_split)
        else:
            eval_hr = held_out.get_batch(evenly_spaced(len(held_out), config.eval_images))
    if config.flip:
        train_view.transform = RandomHorizontalFlip()
    return train_view, eval_hr


def train(config: SRRunConfig) -> dict:
    """Build the data, the SR step and the Trainer, run it, and return the Trainer's result."""
    check_run_folder(config.trainer)  # before any face is aligned
    out_dir = Path(config.trainer.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr_config = config.sr.resolved(config.trainer.max_steps)
    config.sr = sr_config
    save_config(config, out_dir / "config.yaml")
    hr_size = sr_config.model.output_size
    dataset, eval_hr = build_sr_data(config.data, hr_size, out_dir, progress=config.trainer.progress)
    step = SRStep(sr_config, eval_hr=eval_hr)
    run_config = {"sr": to_dict(sr_config), "data": without_later_defaults(to_dict(config.data), LATER_SOURCE_DEFAULTS)}
    m = sr_config.model
    log.info("training x%d SR, %d -> %d px, on %d faces from %s; adversarial from step %s", m.scale, m.input_size,
             m.output_size, len(dataset), config.data.source, sr_config.pretrain_steps if sr_config.adversarial else "never")
    return Trainer(step, dataset, config.trainer, run_config).fit()
