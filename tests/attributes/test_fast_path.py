"""The attribute inference fast path (`LoadedModel.fast`, `FastAttributeModel`): BatchNorms
folded, NHWC, optional bfloat16; outputs within the stated tolerances of the trained model."""
from __future__ import annotations

import pytest
import torch

from attributes.heads import HeadConfig
from attributes.inference import FastAttributeModel, raw_outputs
from attributes.model import AttributeEnsemble, ModelConfig, build_attribute_model
from attributes.trunks import TrunkConfig
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from engine.device import cpu_has_native_bfloat16
from engine.fold import count_batchnorms

SCHEMAS = {"faces": LabelSchema((Task("Smiling", TaskKind.BINARY), Task("Male", TaskKind.BINARY),
                                 Task("Hair", TaskKind.CATEGORICAL, classes=("dark", "fair", "gray")),
                                 Task("Age", TaskKind.REGRESSION, value_range=(0.0, 100.0))))}


def _trained_looking(seed: int, sa: bool = False, schemas=SCHEMAS):
    """A small model whose BatchNorms hold non-trivial statistics, as after training."""
    torch.manual_seed(seed)
    config = ModelConfig(TrunkConfig("alexnet_bn", 64, 0.125),
                         HeadConfig(conv_channels=16, reduce_channels=8, feature_dim=32, sa_softmax=sa))
    model = build_attribute_model(config, schemas).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("kind", ["single", "sa", "ensemble"])
def test_folded_outputs_equal_the_trained_model(kind):
    model = (AttributeEnsemble([_trained_looking(1), _trained_looking(2)]).eval() if kind == "ensemble"
             else _trained_looking(1, sa=kind == "sa"))
    fast = FastAttributeModel(model)
    assert count_batchnorms(fast) == 0 and count_batchnorms(model) > 0
    assert fast.groups is model.groups and fast.input_size == model.input_size
    faces = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    want, got = raw_outputs(model, faces, "faces", flip_tta=True), raw_outputs(fast, faces, "faces", flip_tta=True)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5)
    assert count_batchnorms(model) > 0, "the trained model itself is not changed"


def test_bfloat16_stays_within_its_stated_tolerance():
    model = _trained_looking(3)
    fast = FastAttributeModel(model, dtype=torch.bfloat16)
    faces = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    want, got = raw_outputs(model, faces, "faces"), raw_outputs(fast, faces, "faces")
    for name in want:
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], want[name], rtol=2e-2, atol=2e-2)


def test_bf16_is_used_only_where_the_cpu_has_it(tmp_path):
    from tests.attributes.conftest import train_tiny

    from attributes.inference import load_attribute_model

    run = train_tiny(tmp_path, "run", 2)
    loaded = load_attribute_model(run / "checkpoints" / "latest.pt")
    fast = loaded.fast(bf16=True)
    assert fast.dtype == (torch.bfloat16 if cpu_has_native_bfloat16() else None)
    assert loaded.fast(bf16=True) is fast and loaded.fast() is not fast  # one per precision, made once


def test_micro_batches_give_the_outputs_of_one_batch():
    """The CPU fast path runs a batch in pieces of `micro_batch` faces that never mix datasets;
    faces past the layout (unlabelled) are skipped; every face's outputs are those of the
    whole batch at once, in the same order."""
    schemas = {"faces": SCHEMAS["faces"], "other": LabelSchema((Task("Smiling", TaskKind.BINARY),))}
    model = _trained_looking(4, schemas=schemas)
    images = torch.randn(13, 3, 64, 64)
    layout = [("faces", 7), ("other", 4)]
    want, _ = model(images, layout, unlabelled=2)
    pieces = FastAttributeModel(model, micro_batch=3)
    assert list(pieces._pieces(layout, images.device)) == [("faces", 0, 3), ("faces", 3, 6), ("faces", 6, 7),
                                                           ("other", 7, 10), ("other", 10, 11)]
    got, _ = pieces(images, layout, unlabelled=2)
    whole, _ = FastAttributeModel(model, micro_batch=None)(images, layout, unlabelled=2)
    assert got.keys() == want.keys() == {"faces", "other"}
    for dataset in want:
        for name in want[dataset]:
            assert got[dataset][name].shape == want[dataset][name].shape
            torch.testing.assert_close(got[dataset][name], want[dataset][name], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got[dataset][name], whole[dataset][name], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="layout covers 11 images"):
        pieces(images, layout)
