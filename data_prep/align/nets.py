"""MTCNN's three networks (Zhang et al., "Joint face detection and alignment using multitask
cascaded convolutional networks", 2016), with the trained weights that ship in the
facenet-pytorch wheel (`facenet_pytorch/data/{pnet,rnet,onet}.pt`).

They are declared here, layer names matching those weight files, so that detection needs only
torch: importing facenet-pytorch pulls in torchvision and with it torch._dynamo, about 1.2 s
of start-up for every `facegan align`. Nothing is downloaded; a missing file is an error that
says what to install.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from engine.errors import FaceganError

__all__ = ["PNet", "RNet", "ONet", "load_mtcnn_nets", "weights_folder"]


class PNet(nn.Module):
    """Proposal net: fully convolutional over the image pyramid; face score and box offsets
    for every 12x12 window (stride 2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)


class RNet(nn.Module):
    """Refine net: 24x24 crops of the proposals; score and box offsets."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from Caffe, which flattens (C, W, H): keep that order.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)


class ONet(nn.Module):
    """Output net: 48x48 crops; score, box offsets and the five landmarks (x1..x5, y1..y5,
    as fractions of the box)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)


def weights_folder() -> Path:
    """Where the facenet-pytorch wheel keeps the MTCNN weights, found without importing it."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.origin is None:
        raise FaceganError("the MTCNN weights come with facenet-pytorch, which is not installed: "
                           "pip install facenet-pytorch==2.5.3 (its wheel holds data/pnet.pt, rnet.pt, onet.pt)")
    return Path(spec.origin).parent / "data"


def load_mtcnn_nets(device: torch.device | str = "cpu") -> tuple[PNet, RNet, ONet]:
    """The three nets with their trained weights, in eval mode on `device`."""
    folder = weights_folder()
    nets = (PNet(), RNet(), ONet())
    for name, net in zip(("pnet", "rnet", "onet"), nets):
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise FaceganError(f"MTCNN weights missing: {path} (reinstall facenet-pytorch==2.5.3, whose wheel ships it)")
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, EOFError) as exc:
            raise FaceganError(f"cannot load the MTCNN weights {path}: {exc}") from exc
        # NHWC: oneDNN runs these small convolutions and poolings about twice as fast on the CPU
        # (R-Net 2.2x, O-Net 1.9x, P-Net 1.7x on 2 threads); the cascade feeds them NHWC too.
        net.to(device, memory_format=torch.channels_last).eval()
    return nets
