import torch
from torch import nn

from engine.ema import ModelEMA


def test_warm_up_forgets_the_initialisation_quickly():
    torch.manual_seed(0)
    source = nn.Linear(3, 3)
    ema = ModelEMA(source, decay=0.999)
    with torch.no_grad():
        source.weight.fill_(1.0)
    for n in range(200):
        ema.update(source, num_updates=n)
    # A fixed 0.999 would leave 0.999**200 = 82% of the initial weights; the warm-up leaves < 6%.
    assert torch.allclose(ema.module.weight, torch.ones(3, 3), atol=0.06)
    assert ema.decay_at(0) == 0.1 and ema.decay_at(10**6) == 0.999


def test_update_matches_the_formula_and_copies_buffers():
    source = nn.BatchNorm1d(2)
    ema = ModelEMA(source, decay=0.5)
    with torch.no_grad():
        source.weight.fill_(3.0)
        source.running_mean.fill_(7.0)
    ema.update(source, num_updates=100)  # decay = min(0.5, 101/110) = 0.5
    assert torch.allclose(ema.module.weight, torch.full((2,), 2.0))  # 0.5 * 1 + 0.5 * 3
    assert torch.equal(ema.module.running_mean, torch.full((2,), 7.0))
    assert not any(p.requires_grad for p in ema.module.parameters())
