"""Trunks, heads, the multi-dataset model and dataset-parallel batching."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attributes.heads import HeadConfig, decode_group, group_loss, plan_groups
from attributes.model import ModelConfig, build_attribute_model
from attributes.multidataset import ParallelDatasets, augment_batch, combine_losses
from attributes.step import AugmentConfig
from attributes.trunks import AlexNetBN, ResNetTrunk, VGGBN, TrunkConfig, TrunkError, build_trunk, feature_shape
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from engine.config import ConfigError

MIXED = LabelSchema((
    Task("Smiling", TaskKind.BINARY), Task("Male", TaskKind.BINARY), Task("Bangs", TaskKind.BINARY),
    Task("Hair", TaskKind.CATEGORICAL, classes=("black", "blond", "brown", "gray")),
    Task("Age", TaskKind.REGRESSION, value_range=(0.0, 20.0)),
))
GENDER_AGE = LabelSchema((Task("Age", TaskKind.REGRESSION, value_range=(0.0, 20.0)), Task("Male", TaskKind.BINARY)))


@pytest.mark.parametrize("size,expected", [(64, 7), (128, 7), (224, 6)])
def test_alexnet_bn_keeps_a_spatial_map_at_every_input_size(size, expected):
    trunk = AlexNetBN(size, width=0.25)
    c, h, w = feature_shape(trunk, size)
    assert (c, h, w) == (trunk.out_channels, expected, expected)
    # ConvUnit = conv + BN + ReLU, five of them, three 3x3/2 max pools
    convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in trunk.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == 5 and len(pools) == 3 and all(p.kernel_size == 3 and p.stride == 2 for p in pools)
    assert convs[0].stride == ((1, 1) if size == 64 else convs[0].stride)


@pytest.mark.parametrize("size,width,channels", [(64, 1.0, 256), (80, 0.5, 128), (64, 0.25, 64)])
def test_vgg_bn_is_nine_3x3_units_with_three_2x2_pools(size, width, channels):
    trunk = build_trunk(TrunkConfig("vgg_bn", size, width))
    assert isinstance(trunk, VGGBN)
    convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 9
    assert [c.out_channels for c in convs] == [max(8, round(c * width)) for c in (32, 32, 64, 64, 128, 128, 256, 256, 256)]
    pools = [i for i, m in enumerate(trunk.features) if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [2, 5, 8]  # after the second, fourth and sixth unit
    assert feature_shape(trunk, size) == (channels, size // 8, size // 8)
    assert trunk.get_submodule(trunk.cam_layer) is trunk.features[-1]
    with pytest.raises(TrunkError, match="pruned"):
        build_trunk(TrunkConfig("vgg_bn", 64, 0.5, channels=[8] * 5))


def test_resnet_trunk_small_stem_and_local_torchvision_weights(tmp_path):
    from torchvision.models import resnet18

    assert feature_shape(ResNetTrunk(18, 64), 64) == (512, 8, 8)
    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    trunk = build_trunk(TrunkConfig("resnet18", 224, checkpoint=str(path)))
    assert torch.equal(trunk.body[4][0].conv1.weight, reference.layer1[0].conv1.weight)
    assert torch.equal(trunk.body[0].weight, reference.conv1.weight)
    with pytest.raises(TrunkError, match="not found"):
        build_trunk(TrunkConfig("resnet18", 64, checkpoint=str(tmp_path / "missing.pth")))


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_trunk_at_width_one_is_torchvision_resnet(depth):
    import torchvision.models as tvm

    torch.manual_seed(0)
    reference = getattr(tvm, f"resnet{depth}")(weights=None).eval()
    trunk = ResNetTrunk(depth, 128).eval()
    assert trunk.load_torchvision(reference.state_dict()) == []  # every tensor has torchvision's shape
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(reference.children())[:-2])(x)
        assert torch.allclose(trunk(x), expected, atol=1e-5)


@pytest.mark.parametrize("depth,width,stride,expected", [
    (10, 0.5, 2, (256, 4, 4)), (18, 0.375, 2, (192, 4, 4)), (18, 0.25, 1, (128, 8, 8)), (50, 0.25, 2, (512, 4, 4)),
])
def test_narrow_resnet_trunks_for_small_faces(depth, width, stride, expected):
    trunk = build_trunk(TrunkConfig(f"resnet{depth}", 64, resnet_width=width, resnet_stem_stride=stride))
    assert feature_shape(trunk, 64) == expected == (trunk.out_channels, *expected[1:])
    assert trunk.body[0].stride == (stride, stride) and trunk.body[0].kernel_size == (3, 3)
    blocks = [m for m in trunk.modules() if type(m).__name__ in ("BasicBlock", "Bottleneck")]
    assert len(blocks) == {10: 4, 18: 8, 50: 16}[depth]


@pytest.mark.parametrize("bad,match", [
    (dict(name="resnet12"), "depth"), (dict(resnet_width=0.0), "width"), (dict(resnet_stem_stride=3), "stride"),
])
def test_resnet_trunk_rejects_bad_settings(bad, match):
    with pytest.raises(TrunkError, match=match):
        build_trunk(TrunkConfig(**{"name": "resnet18", "input_size": 64, **bad}))


def test_trunk_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    first = build_trunk(TrunkConfig("alexnet_bn", 64, 0.25))
    path = tmp_path / "trunk.pt"
    torch.save(first.state_dict(), path)
    torch.manual_seed(1)
    second = build_trunk(TrunkConfig("alexnet_bn", 64, 0.25, checkpoint=str(path)))
    x = torch.randn(2, 3, 64, 64)
    first.eval(), second.eval()
    assert torch.equal(first(x), second(x))
    with pytest.raises(TrunkError, match="does not fit"):
        build_trunk(TrunkConfig("alexnet_bn", 64, 0.5, checkpoint=str(path)))


def test_shipped_trunk_weights_load_by_name_and_a_missing_name_says_what_ships():
    from attributes.trunks import shipped_trunk_weights, trunk_weights_file

    assert "vgg_bn-0.5-utkface-lfw" in shipped_trunk_weights()
    file = trunk_weights_file("vgg_bn-0.5-utkface-lfw")
    assert file.is_file() and file.parent.name == "weights"
    record = torch.load(file, weights_only=True)
    assert record["trunk"]["name"] == "vgg_bn" and "UTKFace" in record["about"]
    torch.manual_seed(0)
    trunk = build_trunk(TrunkConfig("vgg_bn", 80, 0.5, checkpoint="vgg_bn-0.5-utkface-lfw"))
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, record["state_dict"][key]), key
    with pytest.raises(TrunkError, match="ships: vgg_bn-0.5-utkface-lfw"):
        build_trunk(TrunkConfig("vgg_bn", 80, 0.5, checkpoint="no-such-weights"))
    with pytest.raises(TrunkError, match="does not fit"):  # the same trunk at another width
        build_trunk(TrunkConfig("vgg_bn", 80, 0.25, checkpoint="vgg_bn-0.5-utkface-lfw"))


def test_groups_follow_the_schema():
    groups = plan_groups("d", MIXED, HeadConfig())
    assert [(g.name, g.num_outputs) for g in groups] == [("binary", 3), ("Hair", 4), ("Age", 1)]
    assert groups[0].columns == [0, 1, 2] and groups[1].columns == [3] and groups[2].columns == [4]
    sa = plan_groups("d", MIXED, HeadConfig(sa_softmax=True, age_mode="dex", share_tasks=["Male"]))
    by_name = {g.name: g for g in sa}
    assert by_name["binary"].num_outputs == 2 * 3  # Smiling, Bangs: no / yes / unrecognizable
    assert by_name["Male"].subnet == "shared:Male" and by_name["Male"].num_outputs == 3
    assert by_name["Hair"].num_outputs == 5 and by_name["Age"].num_outputs == 21
    with pytest.raises(ValueError, match="not in its schema"):
        plan_groups("d", MIXED, HeadConfig(), tasks=["Nope"])


def test_label_smoothing_pulls_binary_targets_towards_one_half_and_smooths_class_heads():
    groups = {g.name: g for g in plan_groups("d", MIXED, HeadConfig())}
    torch.manual_seed(0)
    out, targets = torch.randn(4, 3), torch.tensor([[1.0, 0.0, 1.0]] * 4)
    mask = torch.ones(4, 3, dtype=torch.bool)
    smoothed = group_loss(groups["binary"], out, targets, mask, smoothing=0.2)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out, targets * 0.8 + 0.1)
    assert torch.allclose(smoothed, expected)
    assert not torch.allclose(smoothed, group_loss(groups["binary"], out, targets, mask))
    logits, classes = torch.randn(4, 4), torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    hair = group_loss(groups["Hair"], logits, classes, torch.ones(4, 1, dtype=torch.bool), smoothing=0.1)
    assert torch.allclose(hair, torch.nn.functional.cross_entropy(logits, classes[:, 0].long(), label_smoothing=0.1))


def test_masked_labels_do_not_change_the_loss():
    groups = {g.name: g for g in plan_groups("d", MIXED, HeadConfig())}
    torch.manual_seed(0)
    out = torch.randn(4, 3)
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, False, True], [True, True, True], [False, True, True]])
    base = group_loss(groups["binary"], out, targets, mask)
    garbage = torch.where(mask, targets, torch.full_like(targets, 7.0))
    assert torch.allclose(base, group_loss(groups["binary"], out, garbage, mask))
    assert group_loss(groups["binary"], out, targets, torch.zeros_like(mask)) is None
    # regression: L1 in decades over labelled rows only
    age = torch.tensor([[2.0], [5.0], [9.0], [0.0]])
    pred = torch.tensor([[3.0], [5.0], [0.0], [1.0]])
    amask = torch.tensor([[True], [True], [False], [True]])
    assert torch.isclose(group_loss(groups["Age"], pred, age, amask), torch.tensor((1 + 0 + 1) / 3 / 10))


def test_decoding():
    groups = {g.name: g for g in plan_groups("d", MIXED, HeadConfig(sa_softmax=True, age_mode="dex"))}
    binary = groups["binary"]
    out = torch.tensor([[0.0, 5.0, -9.0, 0.0, 0.0, 9.0, 2.0, -1.0, -9.0]])  # 3 attributes x (no, yes, unrec.)
    decoded = decode_group(binary, out)
    assert decoded["pred"].tolist() == [[1, 1, 0]]  # a 0.5 tie counts as "yes"
    assert decoded["confidence"][0, 0] > 0.99 and decoded["confidence"][0, 1] < 0.01  # 2nd: unrecognizable wins
    assert torch.allclose(decoded["prob"][0, 1], torch.tensor(0.5))  # class probs ignore the N+1 output
    age = decode_group(groups["Age"], torch.zeros(2, 21))
    assert torch.allclose(age["value"], torch.tensor([10.0, 10.0]))  # uniform over 0..20 -> mean 10


def test_one_trunk_pass_feeds_every_dataset_and_shared_heads_are_shared():
    config = ModelConfig(TrunkConfig("alexnet_bn", 64, 0.25), HeadConfig(share_tasks=["Male"]))
    model = build_attribute_model(config, {"a": MIXED, "b": GENDER_AGE}).eval()
    calls = []
    model.trunk.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = torch.randn(5, 3, 64, 64)
    outputs, log_vars = model(x, [("a", 3), ("b", 2)])
    assert calls == [5]
    assert outputs["a"]["binary"].shape == (3, 2) and outputs["a"]["Male"].shape == (3, 1)
    assert outputs["b"]["Age"].shape == (2, 1) and set(outputs["b"]) == {"Age", "Male"}
    assert log_vars.shape == (len(model.loss_terms),)
    same, _ = model(x[:2].repeat(2, 1, 1, 1), [("a", 2), ("b", 2)])
    assert torch.allclose(same["a"]["Male"], same["b"]["Male"], atol=1e-5)  # one shared Male head
    assert not torch.allclose(same["a"]["Age"], same["b"]["Age"])  # per-dataset Age heads
    with pytest.raises(ValueError, match="layout covers"):
        model(x, [("a", 3)])


class _Items(torch.utils.data.Dataset):
    def __init__(self, n, tag):
        self.n, self.tag = n, tag

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (self.tag, i)


def test_parallel_datasets_cycle_smaller_sets_as_fresh_permutations():
    parallel = ParallelDatasets({"big": _Items(10, "big"), "small": _Items(4, "small")}, seed=3)
    assert len(parallel) == 10
    picks = [parallel[i]["small"][1] for i in range(10)]
    assert [parallel[i]["big"][1] for i in range(10)] == list(range(10))
    assert sorted(picks[0:4]) == [0, 1, 2, 3] and sorted(picks[4:8]) == [0, 1, 2, 3]
    assert picks[0:4] != picks[4:8] or picks[4:8] != picks[8:] + picks[:2]  # cycles are reshuffled
    again = ParallelDatasets({"big": _Items(10, "big"), "small": _Items(4, "small")}, seed=3)
    assert [again[i]["small"][1] for i in range(10)] == picks


def test_balancing_weights_by_hand():
    from attributes.multidataset import balancing_weights

    # column 0 binary: 1 positive in 4 (freq 1/4 vs 3/4); column 1 a 3-class task with one face unlabelled
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    mask = torch.tensor([[True, True], [True, True], [True, True], [True, False]])
    w = balancing_weights(targets, mask, [0], power=1.0)
    # 1/(1/4) = 4 for the positive, 1/(3/4) = 4/3 for the negatives: 4 : 4/3 : 4/3 : 4/3
    assert np.allclose(w, np.array([4, 4 / 3, 4 / 3, 4 / 3]) / 8)
    w = balancing_weights(targets, mask, [0, 1], power=1.0)
    # column 1 among the 3 labelled faces: class 0 twice (3/2 each), class 1 once (3); face 3 only has column 0
    raw = np.array([(4 + 1.5) / 2, (4 / 3 + 1.5) / 2, (4 / 3 + 3) / 2, 4 / 3])
    assert np.allclose(w, raw / raw.sum())
    assert np.allclose(balancing_weights(targets, mask, [0], power=0.0), 0.25)  # power 0: uniform


def test_balanced_cycles_draw_rare_classes_as_often_and_reproducibly():
    from attributes.multidataset import balancing_weights

    labels = torch.tensor([0.0] * 90 + [1.0] * 10).view(-1, 1)
    weights = balancing_weights(labels, torch.ones_like(labels, dtype=torch.bool), [0], power=1.0)
    parallel = ParallelDatasets({"a": _Items(100, "a")}, seed=1, weights={"a": weights})
    picks = [parallel[i]["a"][1] for i in range(2000)]
    rare = sum(p >= 90 for p in picks) / len(picks)
    assert 0.45 < rare < 0.55  # 10% of the faces, about half of the draws
    again = ParallelDatasets({"a": _Items(100, "a")}, seed=1, weights={"a": weights})
    assert [again[i]["a"][1] for i in range(1500, 2000)] == picks[1500:]  # a pure function of i: resumable
    with pytest.raises(ValueError, match="sampling weights"):
        ParallelDatasets({"a": _Items(100, "a")}, weights={"a": weights[:50]})


def test_combine_losses_fixed_and_uncertainty():
    losses = {"a/binary": torch.tensor(2.0), "b/Age": torch.tensor(3.0)}
    terms = ["a/binary", "a/Hair", "b/Age"]
    assert combine_losses(losses, terms, {"b": 0.5}, None).item() == pytest.approx(2.0 + 1.5)
    s = torch.tensor([0.0, 9.0, 1.0])
    expected = (2.0 + 0.0) + 0.5 * (torch.exp(torch.tensor(-1.0)) * 3.0 + 1.0)
    assert combine_losses(losses, terms, {"b": 0.5}, s).item() == pytest.approx(float(expected))
    with pytest.raises(ValueError):
        combine_losses({}, terms, {}, None)


def test_grayscale_augmentation_replaces_some_faces_by_their_luma():
    x = torch.rand(64, 3, 4, 4) * 2 - 1
    out = augment_batch(x, False, 0, torch.Generator().manual_seed(1), grayscale=0.5)
    gray = [bool(torch.equal(o[0], o[1]) and torch.equal(o[1], o[2])) for o in out]
    assert 16 < sum(gray) < 48
    k = gray.index(True)
    assert torch.allclose(out[k, 0], 0.299 * x[k, 0] + 0.587 * x[k, 1] + 0.114 * x[k, 2])
    untouched = gray.index(False)
    assert torch.equal(out[untouched], x[untouched])
    assert torch.equal(augment_batch(x, False, 0, torch.Generator().manual_seed(1)), x)


def test_augmentation_is_reproducible_and_flips_exactly():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    a = augment_batch(x, True, 1, torch.Generator().manual_seed(5))
    b = augment_batch(x, True, 1, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == x.shape
    flipped = augment_batch(x, True, 0, torch.Generator().manual_seed(0))
    for k in range(2):
        assert torch.equal(flipped[k], x[k]) or torch.equal(flipped[k], x[k].flip(-1))


def test_rotation_and_zoom_move_pixels_as_asked():
    x = torch.zeros(1, 3, 9, 9)
    x[0, :, 4, 6] = 1.0  # a dot two pixels right of the centre
    # Angles are drawn as (2u - 1) * 90; seed 5 gives u = 0.83, about 59 degrees.
    out = augment_batch(x, False, 0, torch.Generator().manual_seed(5), rotate=90.0)
    u = torch.rand(1, generator=torch.Generator().manual_seed(5)).item()
    angle = math.radians((2 * u - 1) * 90.0)
    peak = divmod(int(out[0, 0].argmax()), 9)
    # theta maps output (x, y) to input by rotating by +angle, so the dot lands at R(-angle) of
    # its place: x = 2 cos(angle), y = -2 sin(angle), with rows growing downwards.
    expected = (round(4 - 2 * math.sin(angle)), round(4 + 2 * math.cos(angle)))
    assert peak == expected and peak != (4, 6)
    zoomed = augment_batch(x, False, 0, torch.Generator().manual_seed(3), scale=0.45)
    zoom = 1.0 + (2 * torch.rand(1, generator=torch.Generator().manual_seed(3)).item() - 1) * 0.45
    row, col = divmod(int(zoomed[0, 0].argmax()), 9)
    assert row == 4 and col == round(4 + 2 * zoom) != 6  # seed 3 zooms out to 0.55
    assert torch.equal(augment_batch(x, False, 0, torch.Generator().manual_seed(0)), x)  # off by default


def test_colour_jitter_matches_torchvision_colour_ops_on_each_face():
    import torchvision.transforms.v2.functional as TF

    x = torch.rand(6, 3, 8, 8) * 2 - 1
    out = augment_batch(x, False, 0, torch.Generator().manual_seed(4), color=0.4)
    factors = 1 + (torch.rand(3, 6, generator=torch.Generator().manual_seed(4)) * 2 - 1) * 0.4
    assert ((factors - 1).abs() > 0.01).all() and ((factors - 1).abs() <= 0.4).all()
    for k in range(6):
        face = (x[k] + 1) / 2  # torchvision works on [0, 1]
        face = TF.adjust_brightness(face, float(factors[0, k]))
        face = TF.adjust_contrast(face, float(factors[1, k]))
        face = TF.adjust_saturation(face, float(factors[2, k]))
        assert torch.allclose(out[k], face * 2 - 1, atol=2e-3)  # torchvision's luma weighs red 0.2989
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(augment_batch(x, False, 0, torch.Generator().manual_seed(4)), x)  # off by default


def test_erasing_blanks_one_rectangle_in_some_faces():
    x = torch.rand(200, 3, 20, 20) + 0.5  # no zeros anywhere
    out = augment_batch(x, False, 0, torch.Generator().manual_seed(2), erase=0.5)
    erased = [(o == 0).all(dim=0) for o in out]
    hit = [e for e in erased if e.any()]
    assert 70 < len(hit) < 130
    for e in hit:
        rows, cols = e.any(dim=1).nonzero().squeeze(1), e.any(dim=0).nonzero().squeeze(1)
        box = e[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all()  # one solid rectangle
        assert 0.01 * 400 <= int(e.sum()) <= 0.25 * 400
    for o, e, xi in zip(out, erased, x):
        assert torch.equal(o[:, ~e], xi[:, ~e])


def test_augment_config_refuses_out_of_range_values():
    for bad in ({"erase": 1.5}, {"scale": -0.1}, {"rotate": -5.0}, {"grayscale": 2.0}, {"max_shift": -1}):
        with pytest.raises(ValueError, match="augment"):
            AugmentConfig(**bad)


def test_loss_and_optim_configs_refuse_bad_values_when_built():
    from attributes.step import LossConfig, OptimConfig

    for bad in ({"weighting": "learned"}, {"sparse_labels": "sometimes"}, {"f_measure_variant": "f2"}, {"center": -1.0},
                {"label_smoothing": 1.0}, {"label_smoothing": -0.1}):
        with pytest.raises(ConfigError, match="loss"):
            LossConfig(**bad)
    for bad in ({"optimizer": "adam"}, {"schedule": "step"}, {"lr": 0.0}, {"min_lr_ratio": 2.0}, {"warmup_steps": -1}):
        with pytest.raises(ConfigError, match="optim"):
            OptimConfig(**bad)
    LossConfig(weighting="uncertainty", sparse_labels="by_coverage")  # the good values still build
    OptimConfig(optimizer="sgd", schedule="constant")


class _CapturingContext:
    """Just enough of engine.trainer.StepContext to run one AttributeStep.train_step on the CPU."""

    def __init__(self, model):
        import contextlib

        self.models = {"model": model}
        self.autocast = contextlib.nullcontext
        self.dist = None
        self.total = None

    def optimize(self, name, loss, retain_graph=False):
        self.total = loss.detach()
        return 0.0


@pytest.mark.parametrize("mode", ["per_task", "by_coverage"])
def test_sparse_labels_by_coverage_weighs_a_head_by_its_labelled_share_of_the_batch(mode):
    from attributes.step import AttributeStep, AugmentConfig, LossConfig, OptimConfig, SAConfig

    schema = LabelSchema((Task("Male", TaskKind.BINARY), Task("Age", TaskKind.REGRESSION, value_range=(0.0, 20.0))))
    torch.manual_seed(0)
    model = build_attribute_model(ModelConfig(TrunkConfig("alexnet_bn", 64, 0.125),
                                              HeadConfig(conv_channels=8, reduce_channels=8, feature_dim=8)), {"d": schema})
    step = AttributeStep(model, {"d": list(range(40))}, {}, batch_size=8, max_steps=10, optim=OptimConfig(),
                         loss=LossConfig(sparse_labels=mode), sa=SAConfig(), augment=AugmentConfig(flip=False, max_shift=0))
    step.ctx = _CapturingContext(model)
    targets = torch.tensor([[1.0, 3.0], [0, 0], [1, 0], [0, 0], [1, 0], [0, 7.0], [1, 0], [0, 0]])
    mask = torch.ones(8, 2, dtype=torch.bool)
    mask[:, 1] = torch.tensor([True, False, False, False, False, True, False, False])  # age on 2 of 8 faces
    batch = {"d": {"image": torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8), "targets": targets,
                   "mask": mask, "index": torch.arange(8)}}
    metrics = step.train_step(batch, 0)
    male, age = metrics["loss/d/binary"], metrics["loss/d/Age"]  # each head's mean over its own labels
    expected = male + (age if mode == "per_task" else age * 2 / 8)
    assert float(step.ctx.total) == pytest.approx(expected, rel=1e-5)


def test_channels_last_model_computes_what_the_nchw_model_computes():
    config = ModelConfig(TrunkConfig("alexnet_bn", 64, 0.125), HeadConfig(conv_channels=8, reduce_channels=8, feature_dim=8))
    torch.manual_seed(0)
    fast = build_attribute_model(config, {"d": MIXED})
    plain = build_attribute_model(ModelConfig(config.trunk, config.head, channels_last=False), {"d": MIXED})
    plain.load_state_dict(fast.state_dict())
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not convs[0].is_contiguous()  # a 5x5 kernel: NHWC strides, not NCHW ones (1x1 kernels are both)
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(6, 3, 64, 64)
    for net in (fast, plain):
        net.eval()
    out_fast, out_plain = fast(x, [("d", 6)])[0]["d"], plain(x, [("d", 6)])[0]["d"]
    for name in out_plain:
        torch.testing.assert_close(out_fast[name], out_plain[name], rtol=1e-4, atol=1e-5)
    # Loading an NCHW checkpoint keeps the NHWC layout (load_state_dict copies into the existing tensors).
    fast.load_state_dict(plain.state_dict())
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in fast.modules() if isinstance(m, torch.nn.Conv2d))


def test_member_trunk_checkpoints_need_one_entry_per_member():
    from attributes.config import AttributeRunConfig
    from engine.config import ConfigError, from_dict

    assert from_dict(AttributeRunConfig, {"members": 2, "member_trunk_checkpoints": ["vgg_bn-0.5-utkface-lfw", ""]})
    with pytest.raises(ConfigError, match="2 starting points for 3 members"):
        from_dict(AttributeRunConfig, {"members": 3, "member_trunk_checkpoints": ["a.pt", ""]})
