import pytest
import torch
from torch import nn

from engine.modes import eval_mode


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_leaves_batchnorm_statistics_alone_and_restores_the_mode(training):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    net.train(training)
    before = net[1].running_mean.clone()
    with eval_mode(net):
        assert not net.training and not net[1].training and not net[2].training
        net(torch.randn(2, 3, 8, 8) + 5)
    assert torch.equal(net[1].running_mean, before)
    assert net.training is training and net[1].training is training
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("a failed sample")
    assert net.training is training  # restored on the error path too
