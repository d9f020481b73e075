"""A plain CNN for the 40 CelebA attributes, written as anyone would write one: the reference that
`attributes_vs_plain.py` holds facegan's attribute models against.

Deliberately free of facegan: no aligner (the central 178x178 of each CelebA image, resized to
64 px), no template, no ensemble, no test-time flip. Nine conv3x3-BN-ReLU layers of
32-32-64-64-128-128-256-256-256 channels with 2x2 max-pools after the 2nd, 4th and 6th, global
average pooling and one linear layer; BCE with logits, Adam at 1e-3 with cosine decay to 0,
batch 64, random horizontal flips, 15 epochs.

    images = load_center_crops(paths)                    # uint8 (N, 64, 64, 3)
    model, seconds = train_plain(images, labels, mask)   # labels 0/1 (N, 40), mask: known labels
    probabilities = predict_plain(model, test_images)
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

__all__ = ["PlainCNN", "load_center_crops", "train_plain", "predict_plain"]

CROP = 178  # CelebA's aligned images are 178 x 218: the central square
SIZE = 64


class PlainCNN(nn.Module):
    def __init__(self, num_outputs: int = 40, widths: Sequence[int] = (32, 32, 64, 64, 128, 128, 256, 256, 256),
                 pool_after: Sequence[int] = (1, 3, 5)):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if index in pool_after:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def _center_crop(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        side = min(CROP, width, height)
        left, top = (width - side) // 2, (height - side) // 2
        face = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BILINEAR)
        return np.asarray(face, dtype=np.uint8)


def load_center_crops(paths: Sequence[str | Path], workers: int = 4) -> np.ndarray:
    """uint8 (N, 64, 64, 3): the central 178 x 178 of each image, resized to 64 px."""
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(_center_crop, paths)))


def _to_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def train_plain(images: np.ndarray, labels: np.ndarray, mask: np.ndarray, *, epochs: int = 15, batch_size: int = 64,
                lr: float = 1e-3, seed: int = 0, max_seconds: float = 0.0) -> tuple[PlainCNN, float, int]:
    """Train on uint8 faces with 0/1 `labels` where `mask` is True; returns the model (eval
    mode), the seconds the training loop took and the steps it made. `max_seconds` stops it
    early (0: the full `epochs`)."""
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    model = PlainCNN(labels.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
    targets, known = torch.from_numpy(labels.astype(np.float32)), torch.from_numpy(mask.astype(bool))
    model.train()
    start = time.perf_counter()
    step = 0
    for _ in range(epochs):
        order = generator.permutation(len(images))
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            x = _to_input(images[rows])
            flips = torch.from_numpy(generator.random(len(rows)) < 0.5)
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(-1), x)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), targets[rows], reduction="none")
            loss = loss[known[rows]].mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if max_seconds and time.perf_counter() - start >= max_seconds:
                return model.eval(), time.perf_counter() - start, step
    return model.eval(), time.perf_counter() - start, step


@torch.no_grad()
def predict_plain(model: PlainCNN, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """P(attribute) (N, outputs) of uint8 faces."""
    model.eval()
    return np.concatenate([torch.sigmoid(model(_to_input(images[i:i + batch_size]))).numpy()
                           for i in range(0, len(images), batch_size)])
