"""Training steps of the face generators, each a `Step` for the engine's one Trainer.

    cfg = GANConfig(model="began")
    Trainer(BEGANStep(cfg), faces, TrainerConfig(ema_modules=("generator",), ...), to_dict(cfg)).fit()

A step owns the maths of one update: noise, forward passes (through `ctx.models`, the
DDP-wrapped modules when distributed, under `ctx.autocast()`), losses, and `ctx.optimize`.
The Trainer owns the loop, checkpoints, EMA and logging.

Batches are whatever the dataset yields: an image tensor, a dict with an "image" key, or a
tuple/list whose first item is the images (a TensorDataset). Images are (B, C, H, W) or
(B, H, W, C); uint8 0..255 is mapped to [-1, 1]; floats must already be in [-1, 1].
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Adam

from engine import schedules
from engine.config import ConfigError
from engine.distributed import all_reduce_mean
from engine.errors import FaceganError
from engine.modes import eval_mode
from engine.reproducibility import derive_seed
from engine.trainer import SeededStep, StepContext
from gan.batches import batch_images, to_nchw, unit_images
from gan.generators.config import GANConfig
from gan.generators.models import build_gan, sample_latent, slerp
from gan.losses import BEGANLoss, critic_update, get_gan_loss

__all__ = ["GANInputError", "GANStep", "DCGANStep", "BEGANStep", "build_gan_step"]


class GANInputError(FaceganError, ValueError):
    """A training batch is not a batch of images of the configured size."""




class GANStep(SeededStep):
    """What both families share: modules, fixed noise, batch decoding, sampling, grids."""

    family = ""

    def __init__(self, config: GANConfig):
        if config.model != self.family:
            raise ConfigError(f"{type(self).__name__} trains model={self.family!r}, but the config says model={config.model!r}")
        self.config = config.resolved()
        cfg = self.config
        # Weights come from a seed of their own, so the same config gives the same initial
        # networks whatever the caller did with the global RNG before (and leaves it untouched).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "init", self.family))
            self.generator, self.discriminator = build_gan(cfg)
        # The fixed noise has its own generator too: the grids of a run (and of its resume) always
        # show the same latent points, and drawing them never shifts the training noise.
        noise_rng = torch.Generator().manual_seed(derive_seed(cfg.seed, "fixed-noise"))
        dim = cfg.latent_dim
        self.fixed_noise = sample_latent(cfg.num_samples, dim, cfg.latent_distribution, generator=noise_rng)
        ends = sample_latent(2 * cfg.interpolation_rows, dim, cfg.latent_distribution, generator=noise_rng)
        self.interpolation_ends = ends.view(cfg.interpolation_rows, 2, dim)
        lr_g, lr_d, betas = self._adam_settings()
        # foreach: one batched kernel per update instead of a loop over tensors (torch picks it on
        # GPUs only); the same numbers (benchmarks/step_bookkeeping.py)
        self._optimizers = {"generator": Adam(self.generator.parameters(), lr=lr_g, betas=betas, foreach=True),
                            "discriminator": Adam(self.discriminator.parameters(), lr=lr_d, betas=betas, foreach=True)}
        self.ctx: StepContext | None = None
        self._range_checked = False

    # ------------------------------------------------------------------ family hooks
    def _adam_settings(self) -> tuple[float, float, tuple[float, float]]:
        """The generator's and the discriminator's Adam learning rates, and their betas."""
        raise NotImplementedError

    # ------------------------------------------------------------------ Step protocol
    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def state_dict(self) -> dict[str, Any]:
        return {"fixed_noise": self.fixed_noise.clone(), "interpolation_ends": self.interpolation_ends.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fixed_noise = state["fixed_noise"].detach().cpu().clone()
        self.interpolation_ends = state["interpolation_ends"].detach().cpu().clone()

    def visualize(self, step: int) -> dict[str, torch.Tensor]:
        """Grids in [-1, 1]: the fixed noise, and slerp strips between fixed latent pairs."""
        net = self._inference_generator()
        device = next(net.parameters()).device
        grids = {"samples": self._generate(net, self.fixed_noise.to(device))}
        if len(self.interpolation_ends):
            ends = self.interpolation_ends.to(device)
            grids["interpolation"] = self.interpolate(ends[:, 0], ends[:, 1], self.config.interpolation_steps)
        return grids

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, batch_size: int = 256) -> torch.Tensor:
        """`n` images in [-1, 1] from the EMA generator when the Trainer keeps one, else the raw one.

        `generator` (a torch.Generator) makes the draw reproducible; it is used on its own device.
        """
        net = self._inference_generator()
        device = next(net.parameters()).device
        z = sample_latent(n, self.config.latent_dim, self.config.latent_distribution, generator=generator, device=device)
        return self._generate(net, z, batch_size)

    @torch.no_grad()
    def interpolate(self, z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
        """Images along the slerp path from `z0` to `z1`, endpoints included.

        `z0`, `z1`: (d,) or (R, d); returns (steps, C, H, W) or (R * steps, C, H, W), one strip of
        `steps` images per row pair, strip after strip.
        """
        if steps < 2:
            raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
        net = self._inference_generator()
        device = next(net.parameters()).device
        t = torch.linspace(0.0, 1.0, steps, device=device)
        path = slerp(z0.to(device), z1.to(device), t)  # (steps, [R,] d)
        if path.ndim == 3:
            path = path.transpose(0, 1)
        return self._generate(net, path.reshape(-1, path.shape[-1]))

    def _inference_generator(self) -> nn.Module:
        if self.ctx is not None and "generator" in self.ctx.ema:
            return self.ctx.ema["generator"]
        return self.generator

    @staticmethod
    def _generate(net: nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        with torch.no_grad(), eval_mode(net):
            # BEGAN's decoder has no tanh: clamp so every consumer gets valid images.
            return torch.cat([net(chunk).float().clamp(-1.0, 1.0) for chunk in z.split(batch_size)])

    # ------------------------------------------------------------------ batches
    def _real_images(self, batch: Any) -> torch.Tensor:
        cfg, checked = self.config, self._range_checked
        images = to_nchw(batch_images(batch, GANInputError), (cfg.channels, cfg.image_size, cfg.image_size),
                         GANInputError, f"expected images of shape (B, {cfg.channels}, {cfg.image_size}, {cfg.image_size}), "
                         f"got {{got}}; resize or align the data to image_size={cfg.image_size}, or change the config")
        self._range_checked |= images.is_floating_point()  # the range is checked on the first float batch
        return unit_images(images, GANInputError, check_range=images.is_floating_point() and not checked)

    def _step_rng(self, step: int) -> torch.Generator:
        """The generator of this step's random draws on this rank (see `setup`)."""
        ctx = self._require_setup()
        # Not the global RNG: the Trainer seeds every rank alike, and the same z on every rank
        # would halve the diversity of a two-process batch.
        return self.rng.manual_seed(derive_seed(self.seed_base, "step", ctx.dist.rank, step))

    def _noise(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return sample_latent(n, self.config.latent_dim, self.config.latent_distribution, generator=rng, device=self.ctx.device)

    def _require_setup(self) -> "StepContext":
        if self.ctx is None:
            raise RuntimeError(f"{type(self).__name__}.setup(ctx) must be called before train_step (the Trainer does it)")
        return self.ctx


class DCGANStep(GANStep):
    """DCGAN (Radford et al. 2016) with a configurable adversarial loss.

    Each call performs `n_critic` discriminator updates and then one generator update. The batch
    the Trainer hands over is split into `n_critic` equal parts, one per critic update, so that
    every critic update sees fresh real images (as in Gulrajani et al.'s algorithm 1, which draws
    a new real batch per critic iteration), every real image is used exactly once per epoch, and
    one loader batch is one generator step. The price: each critic update sees batch/n_critic
    real images; to reproduce WGAN-GP's 64 per update with n_critic=5, use batch_size=320. The
    generator update uses as many samples as one part: the fakes of the last critic update,
    whose forward pass kept its graph for this purpose.

    Metrics: d_loss, g_loss, d_real and d_fake (mean logits), grad_norm_d, grad_norm_g, and for
    WGAN-GP also gp and wasserstein (the critic's estimate E[D(x)] - E[D(G(z))]); values of the
    discriminator are averaged over the critic updates of the call.
    """

    family = "dcgan"

    def __init__(self, config: GANConfig):
        super().__init__(config)
        d = self.config.dcgan
        self.loss = get_gan_loss(d.loss, gp_weight=d.gp_weight) if d.loss == "wgan-gp" else get_gan_loss(d.loss)
        self.n_critic = d.n_critic

    def _adam_settings(self) -> tuple[float, float, tuple[float, float]]:
        d = self.config.dcgan
        return d.lr_g, d.lr_d, d.betas

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        ctx = self._require_setup()
        real = self._real_images(batch)
        if real.shape[0] < self.n_critic:
            raise GANInputError(
                f"a batch of {real.shape[0]} images cannot be split over n_critic={self.n_critic} critic updates; "
                f"use a (per-process) batch size that is a multiple of {self.n_critic}"
            )
        G, D = ctx.models["generator"], ctx.models["discriminator"]
        rng = self._step_rng(step)
        sums: dict[str, float] = {}
        fake = real  # rebound below; n_critic >= 1
        for index, chunk in enumerate(torch.tensor_split(real, self.n_critic)):
            last = index == self.n_critic - 1
            z = self._noise(chunk.shape[0], rng)
            # Only the last critic update's fakes feed the generator update; the others need no graph.
            with torch.set_grad_enabled(last), ctx.autocast():
                fake = G(z)
            metrics = critic_update(self.loss, ctx, "discriminator", D, chunk, fake.detach(), rng, "grad_norm_d")
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
        # D's weights receive gradients here too (its next update clears them). Freezing them
        # would save that work, but under DDP every parameter of a module that ran forward must
        # get a gradient in the following backward.
        with ctx.autocast():
            g_logits = D(fake)
        g_loss = self.loss.generator_loss(g_logits)
        grad_norm_g = ctx.optimize("generator", g_loss)
        averaged = {key: value / self.n_critic for key, value in sums.items()}
        out = {"d_loss": averaged.pop("d_loss"), "g_loss": float(g_loss.detach())}
        out.update(averaged)
        out["grad_norm_g"] = grad_norm_g
        return out


class BEGANStep(GANStep):
    """BEGAN (Berthelot et al. 2017): autoencoder discriminator with the k_t equilibrium control.

    Per call: one noise batch z; the discriminator is updated on L_D = L(x) - k_t L(G(z)), then the
    generator on L_G = L(G(z)) through the updated discriminator (the paper updates both at once
    from the same forward pass; sequential updates are the usual PyTorch form and need no second
    graph through D). k_t is then updated from the L(x) and L(G(z)) measured in the discriminator
    update, and M_global from the same values. k_t is part of `state_dict()`, so a resumed run
    continues with the same k_t.

    Metrics: m_global, k (k_{t+1}, after the update), loss_real (L(x)), loss_fake (L(G(z))),
    d_loss, g_loss, grad_norm_d, grad_norm_g, lr.
    """

    family = "began"

    def __init__(self, config: GANConfig):
        super().__init__(config)
        b = self.config.began
        self.loss = BEGANLoss(gamma=b.gamma, lambda_k=b.lambda_k, eta=b.eta)
        self.k = float(b.k_init)
        self._last_real: torch.Tensor | None = None

    def _adam_settings(self) -> tuple[float, float, tuple[float, float]]:
        b = self.config.began
        return b.lr, b.lr, b.betas

    def learning_rate(self, step: int) -> float:
        """The paper halves the rate when M_global stalls; here on a fixed schedule, a function
        of the step alone so that a resume needs no extra state."""
        b = self.config.began
        if not b.lr_halve_every:
            return b.lr
        return schedules.learning_rate(step, b.lr, "step", step_every=b.lr_halve_every, step_gamma=0.5)

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        ctx = self._require_setup()
        real = self._real_images(batch)
        G, D = ctx.models["generator"], ctx.models["discriminator"]
        lr = self.learning_rate(step)
        for optimizer in self._optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr

        z = self._noise(real.shape[0], self._step_rng(step))
        with ctx.autocast():
            fake = G(z)
            rec_real = D(real)
            rec_fake = D(fake.detach())
        loss_real = self.loss.reconstruction(real, rec_real)
        loss_fake = self.loss.reconstruction(fake.detach(), rec_fake)
        d_loss = self.loss.discriminator_loss(loss_real, loss_fake, self.k)
        grad_norm_d = ctx.optimize("discriminator", d_loss)

        with ctx.autocast():
            rec_gen = D(fake)
        g_loss = self.loss.generator_loss(self.loss.reconstruction(fake, rec_gen))
        grad_norm_g = ctx.optimize("generator", g_loss)

        # k_t is one controller for the whole run: feed it the losses of the global batch, so
        # that every rank holds the same k_t (and the checkpoint of rank 0 holds the run's).
        measured = all_reduce_mean(torch.stack([loss_real.detach(), loss_fake.detach()]), ctx.dist)
        l_real, l_fake = float(measured[0]), float(measured[1])
        m_global = self.loss.convergence(l_real, l_fake)
        self.k = self.loss.update_k(self.k, l_real, l_fake)
        self._last_real = real[:8].detach().clone()
        return {
            "m_global": m_global,
            "k": self.k,
            "loss_real": l_real,
            "loss_fake": l_fake,
            "d_loss": float(d_loss.detach()),
            "g_loss": float(g_loss.detach()),
            "grad_norm_d": grad_norm_d,
            "grad_norm_g": grad_norm_g,
            "lr": lr,
        }

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["k"] = self.k
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.k = float(state["k"])

    def visualize(self, step: int) -> dict[str, torch.Tensor]:
        """Also a "reconstruction" grid: a row of recent real images over their autoencodings."""
        grids = super().visualize(step)
        if self._last_real is not None:
            with torch.no_grad():
                real = self._last_real
                reconstruction = self.discriminator(real).float().clamp(-1.0, 1.0)
            grids["reconstruction"] = torch.cat([real, reconstruction])
        return grids


def build_gan_step(config: GANConfig) -> GANStep:
    """The Step for `config.model`."""
    return {"dcgan": DCGANStep, "began": BEGANStep}[config.model](config)
