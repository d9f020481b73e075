"""Domain-adversarial training (Ganin & Lempitsky, ICML 2015) on the attribute trainer.

A domain classifier reads the shared trunk's features of labelled source faces and
unlabelled target faces through a gradient-reversal layer: it learns to tell the domains
apart while the trunk, receiving the reversed gradient, learns features that it cannot.
The reversal weight ramps up as lambda_p = weight * (2 / (1 + exp(-10 p)) - 1), p the
fraction of training done, so that the early, noisy domain signal does not swamp the task.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from attributes.step import AttributeStep

__all__ = ["GradientReversal", "grad_reverse", "DomainClassifier", "DANNStep"]


class GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by -weight on the way back."""
    return GradientReversal.apply(x, weight)


class DomainClassifier(nn.Module):
    """Global average pool of the trunk's feature map -> MLP -> one logit (target vs source)."""

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(1)


class DANNStep(AttributeStep):
    """An `AttributeStep` whose unlabelled datasets are the target domain."""

    def __init__(self, *args, domain_classifier: DomainClassifier, weight: float = 0.3, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.unlabelled:
            raise ValueError("domain-adversarial training needs an unlabelled (target) dataset")
        self.domain_classifier = domain_classifier
        self.weight = weight
        # One optimizer: the classifier follows the trunk's learning-rate schedule.
        self.optimizer.add_param_group({"params": list(domain_classifier.parameters()), "weight_decay": 0.0})

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "domain": self.domain_classifier}

    def reversal_weight(self, step: int) -> float:
        progress = min(1.0, step / max(1, self.max_steps))
        return self.weight * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)

    def auxiliary_losses(self, features, layout, unlabelled, step, **_):
        labelled = sum(count for _, count in layout)
        logits = self.ctx.models["domain"](grad_reverse(features.float(), self.reversal_weight(step)))
        labels = torch.cat([torch.zeros(labelled), torch.ones(unlabelled)]).to(logits.device)
        return {"domain": nn.functional.binary_cross_entropy_with_logits(logits, labels)}
