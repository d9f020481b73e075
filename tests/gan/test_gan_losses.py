"""Each GAN loss against values worked out by hand on tiny inputs, and the gradient penalty
against closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import FaceganError
from gan.losses import (
    BEGANLoss,
    GAN_LOSSES,
    HingeLoss,
    NonSaturatingLoss,
    WGANGPLoss,
    get_gan_loss,
    gradient_penalty,
    reconstruction_loss,
)

LN3 = math.log(3.0)


def test_registry_names_and_unknown_name():
    assert set(GAN_LOSSES) == {"nonsaturating", "wgan-gp", "hinge"}
    assert isinstance(get_gan_loss("nonsaturating"), NonSaturatingLoss)
    assert isinstance(get_gan_loss("hinge"), HingeLoss)
    wgan = get_gan_loss("wgan-gp", gp_weight=3.0)
    assert isinstance(wgan, WGANGPLoss) and wgan.gp_weight == 3.0
    with pytest.raises(FaceganError, match="unknown GAN loss 'lsgan'.*hinge"):
        get_gan_loss("lsgan")


def test_nonsaturating_by_hand():
    # sigmoid(0) = 1/2 and sigmoid(ln 3) = 3/4.
    real = torch.tensor([0.0, LN3])
    fake = torch.tensor([0.0, -LN3])
    loss = NonSaturatingLoss()
    # D: mean(-log 1/2, -log 3/4) + mean(-log(1 - 1/2), -log(1 - 1/4)) = ln 2 + ln 4/3 = ln 8/3.
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(math.log(8 / 3), abs=1e-6)
    # G: mean(-log 1/2, -log 1/4) = (ln 2 + ln 4) / 2 = 1.5 ln 2.
    assert loss.generator_loss(fake).item() == pytest.approx(1.5 * math.log(2), abs=1e-6)


def test_nonsaturating_matches_cross_entropy_and_survives_extreme_logits():
    real, fake = torch.randn(7), torch.randn(7)
    loss = NonSaturatingLoss()
    bce = F.binary_cross_entropy_with_logits
    expected = bce(real, torch.ones(7)) + bce(fake, torch.zeros(7))
    assert torch.allclose(loss.discriminator_loss(real, fake), expected, atol=1e-6)
    assert torch.allclose(loss.generator_loss(fake), bce(fake, torch.ones(7)), atol=1e-6)
    # A confident discriminator: softplus keeps the loss finite where log(sigmoid) would be -inf.
    extreme = loss.generator_loss(torch.tensor([-200.0]))
    assert torch.isfinite(extreme) and extreme.item() == pytest.approx(200.0)


def test_hinge_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = 0, 1, 2
    loss = HingeLoss()
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert loss.generator_loss(fake).item() == pytest.approx(1.0 / 3)
    assert loss.penalty(nn.Identity(), real, fake) is None


def test_wasserstein_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # mean 0.5
    fake = torch.tensor([-2.0, 0.0, 1.0])  # mean -1/3
    loss = WGANGPLoss()
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(-1.0 / 3 - 0.5)
    assert loss.generator_loss(fake).item() == pytest.approx(1.0 / 3)


class LinearCritic(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, x):
        return x.flatten(1) @ self.weight + 0.7


def test_gradient_penalty_is_exact_for_a_linear_critic():
    # D(x) = w.x + b has gradient w everywhere, so GP = lambda (|w| - 1)^2 whatever the interpolates.
    w = torch.tensor([2.0, -1.0, 2.0, 0.0])  # |w| = 3
    critic = LinearCritic(w)
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    penalty = gradient_penalty(critic, real, fake, weight=10.0)
    assert penalty.item() == pytest.approx(10.0 * (3.0 - 1.0) ** 2, rel=1e-6)
    # create_graph=True makes it differentiable in the weights: d/dw = 2 lambda (|w| - 1) w / |w|.
    penalty.backward()
    assert torch.allclose(critic.weight.grad, 2 * 10.0 * 2.0 * w / 3.0, atol=1e-5)
    # And through the loss object, with its configured weight.
    assert WGANGPLoss(gp_weight=2.5).penalty(critic, real, fake).item() == pytest.approx(2.5 * 4.0, rel=1e-6)


def test_gradient_penalty_uses_each_samples_own_gradient_norm():
    # D(x) = |x|^2 / 2 has gradient x; with real == fake every interpolate is x itself, so the
    # penalty is lambda * mean_i (|x_i| - 1)^2 with per-sample norms.
    critic = lambda x: 0.5 * x.flatten(1).pow(2).sum(1)  # noqa: E731
    x = torch.zeros(2, 3, 2, 2)
    x[0, 0, 0, 0] = 3.0  # |x_0| = 3
    x[1].fill_(0.25)  # |x_1| = 0.25 * sqrt(12)
    norm1 = 0.25 * math.sqrt(12)
    expected = 10.0 * ((3.0 - 1.0) ** 2 + (norm1 - 1.0) ** 2) / 2
    assert gradient_penalty(critic, x, x.clone()).item() == pytest.approx(expected, rel=1e-6)


def test_gradient_penalty_interpolates_between_real_and_fake():
    # D(x) = |x|^2 / 2 with fake = 0: the interpolate e*real has gradient norm e|real| with e in [0, 1].
    seen = []

    def critic(x):
        seen.append(x.detach().clone())
        return 0.5 * x.flatten(1).pow(2).sum(1)

    real = torch.ones(64, 1, 1, 4)
    gradient_penalty(critic, real, torch.zeros_like(real), generator=torch.Generator().manual_seed(0))
    fractions = seen[0].flatten(1)
    assert torch.allclose(fractions, fractions[:, :1].expand_as(fractions))  # one fraction per sample
    assert 0.0 <= fractions.min() and fractions.max() <= 1.0
    assert fractions[:, 0].std() > 0.1  # fractions differ between samples


def test_gradient_penalty_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="differ in shape"):
        gradient_penalty(nn.Identity(), torch.zeros(2, 3), torch.zeros(3, 3))


def test_began_reconstruction_loss_by_hand():
    x = torch.tensor([[1.0, -1.0]])
    reconstruction = torch.tensor([[0.5, 0.0]])  # |error| = 0.5, 1
    assert reconstruction_loss(x, reconstruction).item() == pytest.approx(0.75)
    assert reconstruction_loss(x, reconstruction, eta=2.0).item() == pytest.approx((0.25 + 1.0) / 2)
    assert BEGANLoss(eta=2.0).reconstruction(x, reconstruction).item() == pytest.approx(0.625)


def test_began_objective_controller_and_convergence_by_hand():
    loss = BEGANLoss(gamma=0.5, lambda_k=0.001)
    l_real, l_fake = torch.tensor(0.2), torch.tensor(0.3)
    assert loss.discriminator_loss(l_real, l_fake, k=0.5).item() == pytest.approx(0.2 - 0.5 * 0.3)
    assert loss.generator_loss(l_fake).item() == pytest.approx(0.3)
    # k + lambda_k (gamma L(x) - L(G(z))) = 0.5 + 0.001 * (0.1 - 0.3)
    assert loss.update_k(0.5, 0.2, 0.3) == pytest.approx(0.4998)
    assert loss.update_k(0.0, 0.2, 0.3) == 0.0  # clipped below
    assert loss.update_k(1.0, 0.8, 0.1) == 1.0  # clipped above
    assert loss.update_k(0.3, 0.8, 0.1) == pytest.approx(0.3 + 0.001 * 0.3)
    # M_global = L(x) + |gamma L(x) - L(G(z))| = 0.2 + |0.1 - 0.3|
    assert loss.convergence(0.2, 0.3) == pytest.approx(0.4)
    assert BEGANLoss(gamma=0.75).convergence(0.4, 0.3) == pytest.approx(0.4)  # at equilibrium
