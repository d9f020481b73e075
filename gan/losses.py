"""Adversarial objectives of the face generators and of the SR critic, and BEGAN's equilibrium objective.

- non-saturating (Goodfellow et al. 2014, section 3): D minimises -log sigmoid(D(x)) -
  log(1 - sigmoid(D(G(z)))) and G minimises -log sigmoid(D(G(z))) instead of the saturating
  log(1 - sigmoid(D(G(z)))). Written with softplus: -log sigmoid(t) = softplus(-t) and
  -log(1 - sigmoid(t)) = softplus(t), which never evaluates log(0).
- Wasserstein with gradient penalty (Gulrajani et al. 2017, arXiv:1704.00028): the critic
  minimises E[D(G(z))] - E[D(x)] + lambda E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates
  x_hat between real and fake samples; G minimises -E[D(G(z))].
- hinge (Lim & Ye 2017; Miyato et al. 2018): D minimises E[relu(1 - D(x))] + E[relu(1 + D(G(z)))],
  G minimises -E[D(G(z))].
- BEGAN (Berthelot et al. 2017, arXiv:1703.10717): with the autoencoder loss
  L(v) = mean |v - D(v)|^eta, L_D = L(x) - k_t L(G(z)), L_G = L(G(z)),
  k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1) and the convergence measure
  M_global = L(x) + |gamma L(x) - L(G(z))|.

Discriminator outputs are logits (any real number); losses are computed in float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from engine.config import ConfigError
from engine.deprecation import moved_names

__all__ = [
    "AdversarialLoss",
    "NonSaturatingLoss",
    "WGANGPLoss",
    "HingeLoss",
    "GAN_LOSSES",
    "get_gan_loss",
    "critic_update",
    "gradient_penalty",
    "reconstruction_loss",
    "BEGANLoss",
]


class AdversarialLoss:
    """A GAN objective: the discriminator's loss, the generator's loss and an optional gradient
    penalty on the discriminator, of weight `gp_weight` (None: the objective has none)."""

    name: str = ""
    gp_weight: float | None = None

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The gradient penalty to add to the discriminator loss, or None when the objective has
        none. `generator` supplies the interpolation draws (the global RNG by default)."""
        if self.gp_weight is None:
            return None
        return gradient_penalty(critic, real, fake, weight=self.gp_weight, generator=generator)


class NonSaturatingLoss(AdversarialLoss):
    """Goodfellow et al.'s cross-entropy GAN with the non-saturating generator loss."""

    name = "nonsaturating"

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        # Maximising log D(G(z)) rather than minimising log(1 - D(G(z))): the same fixed point,
        # but strong gradients early on, when D rejects every fake with confidence.
        return F.softplus(-fake_logits.float()).mean()


class HingeLoss(AdversarialLoss):
    """The hinge GAN objective (geometric GAN / SN-GAN)."""

    name = "hinge"

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.float().mean()


class WGANGPLoss(AdversarialLoss):
    """The Wasserstein critic objective with a two-sided gradient penalty of weight `gp_weight`."""

    name = "wgan-gp"

    def __init__(self, gp_weight: float = 10.0):
        if gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {gp_weight}")
        self.gp_weight = gp_weight

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return fake_logits.float().mean() - real_logits.float().mean()

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.float().mean()


def critic_update(loss: AdversarialLoss, ctx, name: str, critic: Callable[[torch.Tensor], torch.Tensor],
                  real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None, grad_norm_key: str
                  ) -> dict[str, float]:
    """One update of the discriminator (or critic) registered as `name` in the step context `ctx`:
    `loss`'s discriminator loss on `real` and `fake` (detached) images, plus its penalty. Real
    and fake images pass separately, so BatchNorm statistics stay per domain. Returns d_real and
    d_fake (mean logits), gp and wasserstein (with a penalty), the gradient norm and d_loss."""
    with ctx.autocast():
        real_logits = critic(real)
        fake_logits = critic(fake)
    d_loss = loss.discriminator_loss(real_logits, fake_logits)
    metrics = {"d_real": float(real_logits.detach().float().mean()), "d_fake": float(fake_logits.detach().float().mean())}
    penalty = loss.penalty(critic, real, fake, generator=generator)
    if penalty is not None:
        d_loss = d_loss + penalty
        metrics["gp"] = float(penalty.detach())
        metrics["wasserstein"] = metrics["d_real"] - metrics["d_fake"]
    metrics[grad_norm_key] = ctx.optimize(name, d_loss)
    metrics["d_loss"] = float(d_loss.detach())
    return metrics


GAN_LOSSES: dict[str, type[AdversarialLoss]] = {
    NonSaturatingLoss.name: NonSaturatingLoss,
    WGANGPLoss.name: WGANGPLoss,
    HingeLoss.name: HingeLoss,
}


def get_gan_loss(name: str, **kwargs) -> AdversarialLoss:
    """The adversarial loss registered as `name` ("nonsaturating", "wgan-gp", "hinge").

    Keyword arguments go to its constructor (`gp_weight` for "wgan-gp").
    """
    if name not in GAN_LOSSES:
        raise ConfigError(f"unknown GAN loss {name!r}; choose one of {sorted(GAN_LOSSES)}")
    return GAN_LOSSES[name](**kwargs)


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """lambda * mean_i (||grad_x D(x_hat_i)||_2 - 1)^2 with x_hat_i = e_i x_i + (1 - e_i) x~_i, e_i ~ U[0, 1].

    The gradient is taken with `create_graph=True`, so the penalty is differentiable with respect to
    the critic's weights (the double backward the method needs). It is evaluated in float32 even
    under autocast: input gradients of a float16 forward underflow and bias the norm.
    `generator` draws the interpolation fractions (the global RNG by default).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake batches differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    real = real.detach().float()
    fake = fake.detach().float()
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    if generator is not None:
        eps = torch.rand(shape, generator=generator, device=generator.device).to(real.device)
    else:
        eps = torch.rand(shape, device=real.device)
    interpolates = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        scores = critic(interpolates).float()
    (grad,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    # Sum of per-sample scores: each sample's score depends on its own input only (no BatchNorm in
    # the critic), so the gradient of the sum is the stack of per-sample gradients.
    norms = grad.flatten(1).norm(2, dim=1)
    return weight * (norms - 1.0).pow(2).mean()


def reconstruction_loss(x: torch.Tensor, reconstruction: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """BEGAN's L(v) = mean over pixels and batch of |v - D(v)|^eta (computed in float32)."""
    error = (x.float() - reconstruction.float()).abs()
    return (error if eta == 1.0 else error.pow(eta)).mean()


@dataclass(frozen=True)
class BEGANLoss:
    """BEGAN's objective and its proportional controller (see the module docstring).

    `gamma` (the diversity ratio E[L(G(z))] / E[L(x)] the controller aims for) trades diversity
    (high) for quality (low); `lambda_k` is the controller's gain.
    """

    gamma: float = 0.5
    lambda_k: float = 0.001
    eta: float = 1.0

    def reconstruction(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(x, reconstruction, self.eta)

    def discriminator_loss(self, loss_real: torch.Tensor, loss_fake: torch.Tensor, k: float) -> torch.Tensor:
        """L_D = L(x) - k_t L(G(z)): reconstruct real images well and generated ones badly, the
        latter weighted by how far the equilibrium currently lets D push."""
        return loss_real - k * loss_fake

    def generator_loss(self, loss_fake: torch.Tensor) -> torch.Tensor:
        """L_G = L(G(z)): make generated images that the autoencoder reconstructs well."""
        return loss_fake

    def update_k(self, k: float, loss_real: float, loss_fake: float) -> float:
        """k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1)."""
        return min(1.0, max(0.0, k + self.lambda_k * (self.gamma * float(loss_real) - float(loss_fake))))

    def convergence(self, loss_real: float, loss_fake: float) -> float:
        """M_global = L(x) + |gamma L(x) - L(G(z))|: falls as training converges."""
        return float(loss_real) + abs(self.gamma * float(loss_real) - float(loss_fake))


__getattr__ = moved_names(__name__, {name: "gan.sr.losses" for name in ("PIXEL_LOSSES", "pixel_loss", "lpips_loss")})
