"""Grad-CAM (attributes/explain.py): the maps on a model whose answer is known, the randomised-head
sanity check, and `facegan attributes explain` on real photos."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from torch import nn

from attributes.explain import Target, grad_cam, randomized_head, rank_correlation
from attributes.heads import HeadConfig, plan_groups
from data_prep.datasets.schema import LabelSchema
from transfer.cli import main


class _HalvesTrunk(nn.Module):
    """Two channels at 8x8: the pooled channel sum on the left half (channel 0), on the right (channel 1)."""

    def forward(self, images):
        s = nn.functional.avg_pool2d(images, 4).sum(1, keepdim=True)
        left = torch.zeros_like(s)
        left[..., :4] = 1
        return torch.cat([s * left, s * (1 - left)], 1)


class _LeftChannelModel(nn.Module):
    """The attribute's logit is the mean of channel 0 (the left half): Grad-CAM weights channel 0
    positively and channel 1 by zero, so its map must light the left half only."""

    def __init__(self):
        super().__init__()
        self.trunk = _HalvesTrunk()
        self.groups = {"d": plan_groups("d", LabelSchema.binary(["Smiling"]), HeadConfig())}

    def forward(self, images, layout):
        logit = self.trunk(images)[:, 0].mean((1, 2)).unsqueeze(1)
        return {"d": {"binary": logit}}, torch.zeros(1)


def test_grad_cam_lights_what_the_output_reads():
    images = torch.rand(2, 3, 32, 32) + 0.1  # positive activations everywhere
    target = [Target("binary", "Smiling", 0)]
    maps = grad_cam(_LeftChannelModel(), images, "d", target)["Smiling"]
    assert maps.shape == (2, 32, 32)
    assert float(maps.max()) == 1.0 and float(maps.min()) >= 0.0
    assert float(maps[:, :, :12].min()) > 0.2  # the half the logit reads
    assert float(maps[:, :, 20:].max()) == 0.0  # the half it ignores (the bilinear seam lies between)
    # a negative answer is explained by the evidence for "no": with negative activations the sign
    # of the explained score flips with the prediction, and the map is the same
    negative = grad_cam(_LeftChannelModel(), -images, "d", target)["Smiling"]
    assert torch.allclose(negative, maps)


def test_rank_correlation():
    a = torch.arange(16.0).view(4, 4)
    assert rank_correlation(a, a * 3 + 1) == 1.0
    assert abs(rank_correlation(a, -a) + 1.0) < 1e-9
    assert rank_correlation(torch.zeros(4, 4), torch.zeros(4, 4)) == 1.0


def test_explain_command_and_the_randomised_head_sanity_check(tmp_path, train_attributes):
    from data_prep.assets import ASTRONAUT_JPG

    run = train_attributes(tmp_path, "run", 20)
    checkpoint = run / "checkpoints" / "latest.pt"
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(ASTRONAUT_JPG).save(photos / "astronaut.jpg")
    Image.open(ASTRONAUT_JPG).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "mirrored.jpg")
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(photos / "blank.png")
    out = tmp_path / "explain"
    assert main(["attributes", "explain", str(checkpoint), str(photos), "--out", str(out), "--tasks", "Male,Hair_Color,Age"]) == 0
    summary = json.loads((out / "gradcam.json").read_text())
    assert summary["faces"] == ["astronaut.jpg", "mirrored.jpg"] and summary["layer"] == "features.6"
    assert [s["path"].split("/")[-1] for s in summary["skipped"]] == ["blank.png"]
    assert summary["tasks"] == ["Male", "Hair_Color", "Age"]
    assert summary["predictions"]["Male"][0].startswith("Male: ")
    # the maps change when the head is re-drawn at random (Adebayo et al.)
    assert summary["sanity"]["mean_rank_correlation"] < 0.9
    assert (out / "gradcam.png").stat().st_size > 10_000
    assert main(["attributes", "explain", str(checkpoint), str(photos), "--out", str(out), "--tasks", "Nope"]) == 2

    # the evaluation report can carry the overlays of test faces
    report = tmp_path / "eval"
    assert main(["attributes", "eval", str(checkpoint), "--out", str(report), "--explain", "3", "--explain-tasks", "Male,Age"]) == 0
    section = json.loads((report / "results.json").read_text())["datasets"]["synthetic"]["gradcam"]
    assert section["faces"] == 3 and section["tasks"] == ["Male", "Age"] and section["mean_rank_correlation"] < 0.9
    assert (report / section["png"]).is_file() and "Grad-CAM" in (report / "report.md").read_text()

    # randomising a copy's head leaves the original model and the copy's trunk untouched
    from attributes.inference import load_attribute_model

    model = load_attribute_model(checkpoint).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    randomized = randomized_head(model, "synthetic", seed=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, randomized.trunk.state_dict()[k]) for k, v in model.trunk.state_dict().items())
    head_keys = [k for k in before if k.startswith("heads.") and k.endswith("weight")]
    assert all(not torch.equal(before[k], randomized.state_dict()[k]) for k in head_keys)
