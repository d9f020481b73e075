"""The training step of the face super-resolution GAN: a `Step` for the engine's one Trainer.

    cfg = SRConfig(...).resolved(max_steps=4000)
    Trainer(SRStep(cfg, eval_hr=val_faces), hr_faces, TrainerConfig(ema_modules=("generator",), ...),
            {"sr": to_dict(cfg)}).fit()

Each step takes a batch of HR faces, makes their LR inputs with the configured degradation
(data_prep/degrade.py; every image's randomness is seeded from the run seed, the rank, the step and
its position, so a resumed run degrades exactly as an uninterrupted one), and updates:

- pretraining, steps [0, pretrain_steps): the generator on the pixel loss (+ LPIPS if weighted);
- adversarial fine-tuning, from `pretrain_steps` on: `n_critic` critic updates on (HR, SR), then
  the generator on pixel + LPIPS + adversarial_weight * the adversarial generator loss.

The critic and both optimisers exist from step 0 whatever the phase, so checkpoints always hold
the same state and a resume is exact in either phase. The generator's learning rate follows
the configured schedule as a pure function of the step (no scheduler state to checkpoint).

Metrics: loss_pixel, g_loss, lr, phase (0 pretraining, 1 adversarial), grad_norm_g, psnr_batch
(of the training batch, before the update, on [-1, 1] floats: a cheap progress signal); in the
adversarial phase also d_loss, g_adv, d_real, d_fake, grad_norm_c, and gp / wasserstein for
WGAN-GP. `evaluate` reports PSNR / SSIM of the EMA generator on held-out faces beside bicubic.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Adam, Optimizer

from data_prep.degrade import Degradation, bicubic_upsample, eval_seeds
from data_prep.transforms import to_unit_range
from engine import schedules
from engine.config import ConfigError
from engine.errors import FaceganError
from engine.reproducibility import derive_seed
from engine.trainer import SeededStep, StepContext
from gan.batches import batch_images, to_nchw, unit_images
from gan.losses import critic_update, get_gan_loss
from gan.sr.config import SRConfig
from gan.sr.inference import make_strips, super_resolve
from gan.sr.losses import lpips_loss, pixel_loss
from gan.sr.models import SRCritic, SRGenerator, build_sr_critic, build_sr_generator

__all__ = ["SRInputError", "SRStep"]


class SRInputError(FaceganError, ValueError):
    """A training batch is not a batch of HR faces of the configured size."""


class SRStep(SeededStep):
    """Pixel pretraining, then adversarial fine-tuning, of the SR generator (module docstring).

    eval_hr: held-out HR faces, (N, 3, S, S) uint8, for `evaluate` (PSNR / SSIM vs bicubic)
        and the sample strips; None disables both.
    lpips_model: a frozen LPIPS module to use when `loss.lpips_weight > 0`; by default it is
        loaded with `gan.metrics.lpips_loader.load_lpips` (which says where its weights go).
    """

    def __init__(self, config: SRConfig, eval_hr: torch.Tensor | None = None, lpips_model: nn.Module | None = None):
        if config.optim.schedule == "cosine" and config.optim.total_steps == 0:
            raise ConfigError("optim.total_steps is 0: resolve the config with SRConfig.resolved(max_steps) first")
        self.config = config
        cfg = config
        # Initial weights from a seed of their own: the same config gives the same networks
        # whatever the caller did with the global RNG before (and leaves it untouched).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "init", "sr"))
            self.generator: SRGenerator = build_sr_generator(cfg.model)
            self.critic: SRCritic = build_sr_critic(cfg.model)
        self._memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if cfg.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.critic.to(memory_format=torch.channels_last)
        self.degradation = Degradation(cfg.degradation, cfg.model.scale)
        loss = cfg.loss
        self.adversarial_loss = (get_gan_loss(loss.adversarial, gp_weight=loss.gp_weight) if loss.adversarial == "wgan-gp"
                                 else get_gan_loss(loss.adversarial))
        o = cfg.optim
        self._optimizers: dict[str, Optimizer] = {
            # foreach as in the attribute and GAN steps: batched kernels, the same numbers
            "generator": Adam(self.generator.parameters(), lr=o.lr, betas=o.betas, foreach=True),
            "critic": Adam(self.critic.parameters(), lr=o.critic_lr, betas=o.critic_betas, foreach=True),
        }
        self.lpips = lpips_model
        if loss.lpips_weight > 0 and self.lpips is None:
            from gan.metrics.lpips_loader import load_lpips

            self.lpips = load_lpips(loss.lpips_net)
        if eval_hr is not None:
            eval_hr = self._check_hr(eval_hr, "eval_hr")
            if eval_hr.dtype != torch.uint8:
                raise SRInputError("eval_hr must be uint8 HR faces (N, 3, S, S)")
            self.eval_hr = eval_hr.cpu()
            seeds = eval_seeds(cfg.degradation, range(len(self.eval_hr)))
            self.eval_lr = self.degradation(self.eval_hr, seeds)
        else:
            self.eval_hr = self.eval_lr = None
        self.ctx: StepContext | None = None
        self.seed_base = 0
        self._range_checked = False
        self._last_step = 0

    # ------------------------------------------------------------------ Step protocol
    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "critic": self.critic}

    def setup(self, ctx: "StepContext") -> None:
        super().setup(ctx)  # seed_base seeds every per-image degradation and the penalty's draws
        if self.lpips is not None:
            self.lpips = self.lpips.to(ctx.device)

    def state_dict(self) -> dict[str, Any]:
        # Everything else a resume needs is in the modules, optimizers and RNG states the
        # Trainer saves; the phase is recorded for people reading the checkpoint.
        return {"phase": self.phase_name(self._last_step), "pretrain_steps": self.config.pretrain_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("pretrain_steps", self.config.pretrain_steps)) != self.config.pretrain_steps:
            raise ConfigError(
                f"the checkpoint was trained with pretrain_steps={state.get('pretrain_steps')}, "
                f"this config has {self.config.pretrain_steps}"
            )

    # ------------------------------------------------------------------ schedule and phases
    def learning_rate(self, step: int) -> float:
        """The generator's learning rate at `step` (warm-up, then the schedule)."""
        o = self.config.optim
        return schedules.learning_rate(step, o.lr, o.schedule, warmup_steps=o.warmup_steps, total_steps=o.total_steps,
                                       min_lr_ratio=o.min_lr_ratio, step_every=o.step_every, step_gamma=o.step_gamma)

    def is_adversarial(self, step: int) -> bool:
        return self.config.adversarial and step >= self.config.pretrain_steps

    def phase_name(self, step: int) -> str:
        return "adversarial" if self.is_adversarial(step) else "pretrain"

    # ------------------------------------------------------------------ batches
    def _check_hr(self, images: torch.Tensor, what: str) -> torch.Tensor:
        size = self.config.model.output_size
        return to_nchw(images, (3, size, size), SRInputError, f"{what}: expected HR faces of shape (B, 3, {size}, {size}), "
                       f"got {{got}}; the HR size is model.output_size={size}: align or cache the data at that size")

    def _hr_images(self, batch: Any) -> torch.Tensor:
        images = self._check_hr(batch_images(batch, SRInputError, "HR images"), "batch")
        checked = self._range_checked
        self._range_checked |= images.is_floating_point()  # the range is checked on the first float batch
        return unit_images(images, SRInputError, "HR images", check_range=images.is_floating_point() and not checked)

    def _require_setup(self) -> "StepContext":
        if self.ctx is None:
            raise RuntimeError("SRStep.setup(ctx) must be called before train_step (the Trainer does it)")
        return self.ctx

    def degrade_batch(self, hr: torch.Tensor, step: int) -> torch.Tensor:
        """The LR inputs of training step `step` on this rank (deterministic given the run seed)."""
        rank = self.ctx.dist.rank if self.ctx is not None else 0
        seeds = [derive_seed(self.seed_base, "degrade", rank, step, i) for i in range(hr.shape[0])]
        return self.degradation(hr, seeds).to(hr.device).contiguous(memory_format=self._memory_format)

    # ------------------------------------------------------------------ the update
    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        ctx = self._require_setup()
        cfg = self.config
        loss_cfg = cfg.loss
        self._last_step = step
        hr = self._hr_images(batch).contiguous(memory_format=self._memory_format)
        lr_images = self.degrade_batch(hr, step)
        G, D = ctx.models["generator"], ctx.models["critic"]
        rate = self.learning_rate(step)
        for group in ctx.optimizers["generator"].param_groups:
            group["lr"] = rate
        adversarial = self.is_adversarial(step)
        metrics: dict[str, float] = {"phase": float(adversarial), "lr": rate}

        with ctx.autocast():
            sr = G(lr_images)
        if adversarial:
            rng = self.rng.manual_seed(derive_seed(self.seed_base, "penalty", ctx.dist.rank, step))
            sums: dict[str, float] = {}
            for _ in range(loss_cfg.n_critic):
                part = critic_update(self.adversarial_loss, ctx, "critic", D, hr, sr.detach(), rng, "grad_norm_c")
                for key, value in part.items():
                    sums[key] = sums.get(key, 0.0) + value
            metrics.update({key: value / loss_cfg.n_critic for key, value in sums.items()})

        loss_pixel = pixel_loss(sr, hr, loss_cfg.pixel)
        g_loss = loss_cfg.pixel_weight * loss_pixel
        metrics["loss_pixel"] = float(loss_pixel.detach())
        if self.lpips is not None and loss_cfg.lpips_weight > 0:
            loss_lpips = lpips_loss(self.lpips, sr, hr)
            g_loss = g_loss + loss_cfg.lpips_weight * loss_lpips
            metrics["loss_lpips"] = float(loss_lpips.detach())
        if adversarial:
            # The critic's weights get gradients here too; its next update clears them (under
            # DDP every parameter of a module that ran forward must get a gradient).
            with ctx.autocast():
                g_logits = D(sr)
            g_adv = self.adversarial_loss.generator_loss(g_logits)
            g_loss = g_loss + loss_cfg.adversarial_weight * g_adv
            metrics["g_adv"] = float(g_adv.detach())
        with torch.no_grad():
            mse = (sr.detach().float().clamp(-1, 1) - hr).pow(2).mean()
            metrics["psnr_batch"] = float(10.0 * torch.log10(4.0 / mse.clamp_min(1e-12)))
        metrics["grad_norm_g"] = ctx.optimize("generator", g_loss)
        metrics["g_loss"] = float(g_loss.detach())
        return metrics

    # ------------------------------------------------------------------ evaluation
    def inference_generator(self) -> nn.Module:
        """The EMA generator when the Trainer keeps one, else the raw one."""
        if self.ctx is not None and "generator" in self.ctx.ema:
            return self.ctx.ema["generator"]
        return self.generator

    def evaluate(self, step: int) -> dict[str, float]:
        """PSNR and SSIM (RGB and Y, crop border = scale) of the held-out faces, beside bicubic."""
        if self.eval_hr is None:
            return {}
        from gan.metrics.batch import to_uint8
        from gan.metrics.image import psnr, ssim

        cfg = self.config
        net = self.inference_generator()
        sr = to_uint8(super_resolve(net, self.eval_lr, cfg.eval_batch_size).cpu())
        bicubic = to_uint8(bicubic_upsample(self.eval_lr, cfg.model.scale).clamp(-1, 1))
        hr = self.eval_hr
        border = cfg.model.scale
        out = {}
        for name, images in (("", sr), ("_bicubic", bicubic)):
            out[f"psnr{name}"] = float(psnr(images, hr, crop_border=border).mean())
            out[f"psnr_y{name}"] = float(psnr(images, hr, crop_border=border, y_channel=True).mean())
            if hr.shape[-1] - 2 * border >= 11:
                out[f"ssim_y{name}"] = float(ssim(images, hr, crop_border=border, y_channel=True).mean())
        out["psnr_y_gain"] = out["psnr_y"] - out["psnr_y_bicubic"]
        return out

    def visualize(self, step: int) -> dict[str, torch.Tensor]:
        """Strips of held-out faces in [-1, 1]: LR | bicubic | SR | HR."""
        if self.eval_hr is None:
            return {}
        n = min(self.config.num_samples, len(self.eval_hr))
        lr = self.eval_lr[:n]
        sr = super_resolve(self.inference_generator(), lr).cpu()
        bicubic = bicubic_upsample(lr, self.config.model.scale).clamp(-1, 1)
        return {"strips": make_strips(lr, bicubic, sr, to_unit_range(self.eval_hr[:n]))}
