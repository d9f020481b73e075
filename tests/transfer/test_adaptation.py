"""Label-free adaptation arms (AdaBN, TENT, self-training): what each changes, and that none of
them reads a target label or a target test face."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transfer.adaptation import (AdaptationError, SelfTrainStep, TentStep, adapt_batch_norm, batch_norms,
                                 class_balanced_keep, confidence_threshold, entropy, pseudo_labels,
                                 unlabelled_view)
from transfer.arms import recipe_for, target_train_faces
from transfer.config import StudyConfig, faceset_transform


def _faces(n: int, seed: int, brightness: int = 0):
    from data_prep.datasets.schema import LabelSchema, Task, TaskKind
    from data_prep.face_array import FaceArray

    rng = np.random.default_rng(seed)
    images = np.clip(rng.integers(0, 200, (n, 32, 32, 3)) + brightness, 0, 255).astype(np.uint8)
    labels = torch.from_numpy(rng.integers(0, 2, (n, 1))).float()
    schema = LabelSchema((Task("Male", TaskKind.BINARY),))
    return FaceArray(images, labels, torch.ones(n, 1, dtype=torch.bool), schema, name=f"faces{seed}")


def _model(faces, sa_softmax: bool = False):
    from attributes.model import ModelConfig, build_attribute_model
    from attributes.trunks import TrunkConfig
    from attributes.heads import HeadConfig

    torch.manual_seed(0)
    config = ModelConfig(trunk=TrunkConfig(name="alexnet_bn", input_size=32, width=0.125),
                         head=HeadConfig(conv_channels=8, reduce_channels=8, feature_dim=16, sa_softmax=sa_softmax))
    return build_attribute_model(config, {"src": faces.schema})


# -- recipes ------------------------------------------------------------------------------------
def test_adapting_recipes_keep_the_budget_and_see_only_the_target_train_faces():
    config = StudyConfig()
    steps = config.budget.steps
    tent = recipe_for("tent", "a", "b", config)
    assert tent.target_faces == "b/train" and tent.adapt_steps == config.options.adapt.tent_steps
    assert tent.previous().key()["steps"] + tent.adapt_steps == steps  # the first phase gets the rest
    self_train = recipe_for("self_train", "a", "b", config)
    assert self_train.previous().key()["steps"] + self_train.adapt_steps == steps
    # AdaBN takes no optimiser step: its previous cell is the source-only training itself.
    assert recipe_for("adabn", "a", "b", config).previous().key() == recipe_for("source_only", "a", "b", config).key()
    assert recipe_for("colour_match+adabn", "a", "b", config).previous().key() == recipe_for("colour_match", "a", "b", config).key()
    # In matched colours the target faces are seen as they are tested.
    assert recipe_for("colour_self_train", "a", "b", config).target_faces == "b/train|gray"
    # Without its AdaBN pass it is the very training that arm's AdaBN starts from: one cell for both.
    no_adabn = recipe_for("colour_self_train_no_adabn", "a", "b", config)
    assert not no_adabn.adabn and no_adabn.adapt == "self_train"
    assert no_adabn.key() == recipe_for("colour_self_train", "a", "b", config).previous().key()
    # Across colour spaces: labelled in the matched colours, learnt and tested in the target's own.
    teacher = recipe_for("colour_teacher_self_train", "a", "b", config)
    assert (teacher.label_faces, teacher.target_faces, teacher.test_colour) == ("b/train|gray", "b/train", "")
    assert teacher.train == (("a", "a/train|gray"),) and not teacher.previous().label_faces
    assert recipe_for("colour_teacher_self_train+adabn", "a", "b", config).previous().key() == teacher.key()
    assert target_train_faces("b", "stats:b") == "b/train" and target_train_faces("b", "") == "b/train"
    combined = recipe_for("combined", "a", "b", config)
    assert combined.train == (("a", "a/train|gray + a/train|sr:b|gray"),) and combined.needs_sr == ("b",)
    assert faceset_transform("a/train|sr:b|gray") == ("a/train|sr:b", "gray", "")
    for arm in ("adabn", "tent", "self_train", "self_train_sa", "colour_self_train", "colour_self_train_no_adabn",
                "colour_teacher_self_train", "combined", "dann+adabn"):
        recipe = recipe_for(arm, "a", "b", config)
        while recipe is not None:
            assert all(not faces.startswith("b/") for _, faces in recipe.train), arm  # never a labelled target face
            assert not recipe.target_faces or recipe.target_faces.startswith("b/train"), arm
            assert not recipe.label_faces or recipe.label_faces.startswith("b/train"), arm
            recipe = recipe.previous()
    with pytest.raises(ValueError, match="unknown arm"):
        recipe_for("magic+adabn", "a", "b", config)


# -- AdaBN and TENT -----------------------------------------------------------------------------
def test_adabn_replaces_the_statistics_by_the_target_faces_and_keeps_the_weights():
    source, target = _faces(64, 0), _faces(64, 1, brightness=50)
    model = _model(source).eval()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    first = batch_norms(model)[0]
    seen = []
    hook = first.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    before = first.running_mean.clone()
    assert adapt_batch_norm(model, target, "src", batch_size=16) == len(batch_norms(model))
    hook.remove()
    inputs = torch.cat(seen)  # what the first BatchNorm layer saw of the 64 target faces
    assert torch.allclose(first.running_mean, inputs.mean((0, 2, 3)), atol=1e-5)
    assert not torch.allclose(first.running_mean, before)
    assert first.momentum == 0.1 and not model.training
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())
    with pytest.raises(AdaptationError, match="at least 2 faces"):
        adapt_batch_norm(model, _faces(1, 2), "src")


def _settings(steps: int = 4, sa=None):
    from attributes.config import AugmentConfig, LossConfig, OptimConfig, SAConfig

    return dict(batch_size=16, max_steps=steps, optim=OptimConfig(lr=1e-2, warmup_steps=0), loss=LossConfig(),
                sa=sa or SAConfig(), augment=AugmentConfig(), flip_tta=True, calibrate_thresholds=False)


class _Context:
    """What the Trainer hands a step, for running a few steps by hand."""

    def __init__(self, model, optimizer):
        from contextlib import nullcontext

        self.models, self.ema, self.device = {"model": model}, {}, torch.device("cpu")
        self.autocast = nullcontext
        self.optimizer = optimizer

    def optimize(self, name, loss):
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return 0.0


def _batch(faces, rows):
    return {"image": faces.get_batch(rows), "targets": faces.targets[rows], "mask": faces.mask[rows],
            "index": torch.as_tensor(rows)}


def test_tent_lowers_the_entropy_by_changing_only_the_batchnorm_scales_and_shifts():
    source, target = _faces(32, 0), unlabelled_view(_faces(32, 1, brightness=50))
    model = _model(source)
    step = TentStep(model, {"src": source, "target:t": target}, {}, head="src", lr=0.05, **_settings())
    step.setup(_Context(model, step.optimizer))
    before = {k: v.clone() for k, v in model.named_parameters()}
    rows = np.arange(16)
    losses = [step.train_step({"src": _batch(source, rows), "target:t": _batch(target, rows)}, i)["loss"] for i in range(8)]
    assert losses[-1] < losses[0]
    affine = {id(p) for m in batch_norms(model) for p in (m.weight, m.bias)}
    for name, p in model.named_parameters():
        assert torch.equal(before[name], p) != (id(p) in affine), name  # the BN affine weights moved, nothing else
    logits = torch.tensor([[0.0], [10.0]])
    group = model.groups["src"][0]
    assert math.isclose(float(entropy(group, logits)), math.log(2) / 2, rel_tol=1e-3)


# -- self-training ------------------------------------------------------------------------------
def test_the_confidence_threshold_is_the_lowest_one_at_the_asked_precision():
    conf = torch.tensor([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    right = torch.tensor([True, True, True, False, True, False])
    assert confidence_threshold(conf, right, 0.75, min_faces=1) == pytest.approx(0.7)  # 4 of the 5 faces down to 0.7
    assert confidence_threshold(conf, right, 0.85, min_faces=1) == pytest.approx(0.9)  # 3 of 4 at 0.8, 4 of 5 at 0.7
    assert confidence_threshold(conf, right, 1.0, min_faces=1) == pytest.approx(0.9)
    assert confidence_threshold(conf, right, 1.0, min_faces=4) == math.inf  # never 4 faces all right
    tied = torch.tensor([0.9, 0.9, 0.5])
    assert confidence_threshold(tied, torch.tensor([True, False, True]), 1.0, min_faces=1) == math.inf  # ties are cut together


def test_pseudo_labels_come_from_the_model_and_the_source_threshold_not_the_target_labels():
    source, target = _faces(48, 0), _faces(48, 1)
    model = _model(source).eval()
    targets, mask, thresholds = pseudo_labels(model, "src", unlabelled_view(target), source, precision=0.5)
    decoded = __import__("attributes.inference", fromlist=["x"]).predict_cache(model, target, "src", flip_tta=True)
    assert torch.equal(targets[:, 0], decoded["binary"]["pred"][:, 0].float())
    assert torch.equal(mask[:, 0], decoded["binary"]["max_softmax"][:, 0] >= thresholds["Male"])
    flipped = _faces(48, 1)
    flipped.targets[:] = 1 - flipped.targets
    again = pseudo_labels(model, "src", unlabelled_view(flipped), source, precision=0.5)
    assert torch.equal(again[0], targets) and torch.equal(again[1], mask)


def test_class_balanced_selection_gives_every_predicted_class_the_same_share():
    label = torch.tensor([0.0] * 8 + [1.0] * 2)
    conf = torch.tensor([0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.6, 0.55])
    keep = class_balanced_keep(label, conf, 0.5)
    assert keep.tolist() == [True] * 4 + [False] * 4 + [True, False]  # a threshold keeping 5 would take class 0 only
    assert not class_balanced_keep(label, conf, 0.0).any() and class_balanced_keep(label, conf, 1.0).all()


def test_balanced_pseudo_labels_keep_as_many_faces_as_the_threshold_spread_over_the_predicted_classes(monkeypatch):
    import transfer.adaptation as adaptation

    source, target = _faces(48, 0), _faces(16, 1)
    label = torch.tensor([0.0] * 12 + [1.0] * 4)  # the model's labels of the target faces, and its confidences:
    conf = torch.tensor([0.99 - 0.01 * i for i in range(12)] + [0.7, 0.65, 0.6, 0.55])  # class 1 is never sure

    def predictions(model, faces, head, device, selection="max_softmax"):
        if faces is source:  # right on every validation face at 0.9: the threshold is 0.9
            return {0: (faces.targets[:, 0].clone(), torch.full((len(faces),), 0.9))}
        return {0: (label, conf)}

    monkeypatch.setattr(adaptation, "_task_predictions", predictions)
    targets, plain, thresholds = pseudo_labels(None, "src", unlabelled_view(target), source, precision=0.9)
    assert thresholds["Male"] == pytest.approx(0.9) and torch.equal(targets[:, 0], label)
    assert plain[:, 0].tolist() == [True] * 10 + [False] * 6  # ten faces, all of class 0
    _, balanced, _ = pseudo_labels(None, "src", unlabelled_view(target), source, precision=0.9, balance_classes=True)
    # The same ten faces' worth (62.5%), now from each class: 8 of the 12 and 2 of the 4, the most confident.
    assert balanced[:, 0].tolist() == [True] * 8 + [False] * 4 + [True, True, False, False]
    with pytest.raises(AdaptationError, match="SA grades"):
        pseudo_labels(None, "src", unlabelled_view(target), source, precision=0.9, selection="sa_grade",
                      balance_classes=True)


def test_class_balancing_enters_a_self_training_cell_only_when_on():
    config = StudyConfig()
    assert "balance_classes" not in config.options.adapt.used_by("self_train")  # earlier cells keep their fingerprints
    config.options.adapt.balance_classes = True
    assert config.options.adapt.used_by("self_train")["balance_classes"] is True
    assert "balance_classes" not in config.options.adapt.used_by("self_train", sa_softmax=True)
    assert "balance_classes" not in config.options.adapt.used_by("tent")


def test_self_training_refuses_labelled_target_faces_and_trains_on_kept_pseudo_labels():
    source, target = _faces(32, 0), _faces(32, 1)
    model = _model(source)
    settings = _settings()
    with pytest.raises(AdaptationError, match="unlabelled_view"):
        SelfTrainStep(model, {"src": source, "target:t": target}, {}, head="src", target_faces=target, source_val=source,
                      relabel_every=2, precision=0.5, **settings)
    hidden = unlabelled_view(target)
    from data_prep.datasets.schema import LabelSchema, Task, TaskKind

    # Two datasets describe one task in their own words: its name, kind and classes are what count.
    hidden.schema = LabelSchema((Task("Male", TaskKind.BINARY, description="verified gender"),))
    assert hidden.schema != source.schema
    step = SelfTrainStep(model, {"src": source, "target:t": hidden}, {}, head="src", target_faces=hidden,
                         source_val=source, relabel_every=2, precision=0.5, **settings)
    step.setup(_Context(model, step.optimizer))
    rows = np.arange(16)
    for i in range(4):
        metrics = step.train_step({"src": _batch(source, rows), "target:t": _batch(hidden, rows)}, i)
    assert [r["step"] for r in step.rounds] == [0, 2]
    assert 0.0 <= metrics["pseudo/kept_fraction"] <= 1.0
    restored = SelfTrainStep(model, {"src": source, "target:t": hidden}, {}, head="src", target_faces=hidden,
                             source_val=source, relabel_every=2, precision=0.5, **settings)
    restored.load_state_dict(step.state_dict())
    assert torch.equal(restored.pseudo_mask, step.rounds[-1]["mask"])  # a resumed run keeps its last labels


def test_self_training_labels_the_label_faces_and_learns_the_target_faces(monkeypatch):
    import transfer.adaptation as adaptation

    source, target = _faces(32, 0), unlabelled_view(_faces(32, 1))
    as_labelled = unlabelled_view(_faces(32, 2, brightness=60))  # "the same faces" in other colours
    sure = torch.ones(32)
    answers = {id(source): source.targets[:, 0].clone(), id(target): torch.zeros(32), id(as_labelled): torch.ones(32)}
    monkeypatch.setattr(adaptation, "_task_predictions", lambda model, faces, *rest, **kw: {0: (answers[id(faces)], sure)})
    model = _model(source)
    step = SelfTrainStep(model, {"src": source, "target:t": target}, {}, head="src", target_faces=target,
                         source_val=source, relabel_every=2, precision=0.5, label_faces=as_labelled, **_settings())
    step.setup(_Context(model, step.optimizer))
    rows = np.arange(16)
    step.train_step({"src": _batch(source, rows), "target:t": _batch(target, rows)}, 0)
    assert step.pseudo_targets[:, 0].tolist() == [1.0] * 32 and step.pseudo_mask.all()  # the labels of as_labelled
    with pytest.raises(AdaptationError, match="target faces themselves"):
        SelfTrainStep(model, {"src": source, "target:t": target}, {}, head="src", target_faces=target, source_val=source,
                      relabel_every=2, precision=0.5, label_faces=unlabelled_view(_faces(16, 2)), **_settings())


def test_sa_grades_select_the_pseudo_labels_and_tag_the_target_faces_as_training_faces():
    from attributes.config import SAConfig
    from attributes.inference import predict_cache

    source, target = _faces(32, 0), unlabelled_view(_faces(32, 1))
    model = _model(source, sa_softmax=True)
    targets, mask, thresholds = pseudo_labels(model.eval(), "src", target, source, precision=0.99, selection="sa_grade")
    decoded = predict_cache(model, target, "src", flip_tta=True)["binary"]
    assert thresholds == {"Male": 0.6}  # grades S and A; the source threshold is not used
    assert torch.equal(mask[:, 0], decoded["confidence"][:, 0] >= 0.6)
    assert torch.equal(targets[:, 0], decoded["pred"][:, 0].float())
    with pytest.raises(AdaptationError, match="needs an SA-softmax head"):
        pseudo_labels(_model(source).eval(), "src", target, source, precision=0.9, selection="sa_grade")

    # One epoch of the 32 source faces per window: the window closes at step 1 with batches of 16.
    step = SelfTrainStep(model, {"src": source, "target:t": target}, {}, head="src", target_faces=target, source_val=source,
                         relabel_every=4, precision=0.9, selection="sa_grade",
                         **_settings(sa=SAConfig(plain_epochs=0, window_epochs=1)))
    step.setup(_Context(model, step.optimizer))
    (state,) = step.sa_states.values()
    assert state.num_images == 64 and not state.valid[32:].any()
    rows = np.arange(16)
    step.train_step({"src": _batch(source, rows), "target:t": _batch(target, rows)}, 0)
    assert torch.equal(state.valid[32:, 0], step.pseudo_mask[:, 0])  # the kept target faces are tagged training faces
    assert torch.equal(state.true[32:, 0][step.pseudo_mask[:, 0]].long(), step.pseudo_targets[step.pseudo_mask[:, 0], 0].long())
    saved = step.state_dict()
    restored = SelfTrainStep(model, {"src": source, "target:t": target}, {}, head="src", target_faces=target,
                             source_val=source, relabel_every=4, precision=0.9, selection="sa_grade",
                             **_settings(sa=SAConfig(plain_epochs=0, window_epochs=1)))
    restored.load_state_dict(saved)  # the tags were saved for the pseudo-labels of the last round
    assert torch.equal(next(iter(restored.sa_states.values())).valid, state.valid)


# -- no target label, no target test face -------------------------------------------------------
def _adapting_config(out, arms: list[str]):
    """The tiny study with `arms`, at a budget small enough for tests."""
    from tests.transfer.test_study import _tiny_config

    config = _tiny_config(out)
    config.arms = arms
    config.budget.steps = 8
    config.options.adapt.tent_steps = 3
    config.options.adapt.relabel_every = 2
    config.options.adapt.precision = 0.5
    return config


def _train_arms(config, out) -> dict:
    """Train every arm's cells of `config` (from studio to wild) in `out`; returns each arm's cell."""
    from transfer.facesets import FaceSets
    from transfer.study import _ensure_trained, _settle_locations, plan_cells

    _settle_locations(config, out)
    sets = FaceSets(config, out, progress=False)
    recipes = {("studio", "wild", arm): recipe_for(arm, "studio", "wild", config) for arm in config.arms}
    cells, assignment = plan_cells(config, recipes, {}, out)
    trained = {}
    for (_, _, arm), (fingerprint,) in assignment.items():
        _ensure_trained(cells[fingerprint], config, sets, torch.device("cpu"), progress=False)
        trained[arm] = cells[fingerprint]
    return trained


def _train_adapting_cells(out, poison: bool, monkeypatch):
    """Train the adapting arms' cells of the tiny study; with `poison`, every target train label
    is flipped and every target test face is noise. Returns each arm's final weights."""
    import transfer.facesets as facesets

    config = _adapting_config(out, ["source_only", "adabn", "tent", "self_train", "self_train_sa", "colour_self_train",
                                    "colour_teacher_self_train", "colour_match+adabn"])
    original = facesets.FaceSets._base

    def base(self, domain, split):
        faces = original(self, domain, split)
        if poison and domain == "wild" and split == "train":
            faces.targets[:] = 1 - faces.targets
        if poison and domain == "wild" and split == "test":
            rng = np.random.default_rng(0)
            faces = faces.with_images(rng.integers(0, 256, faces.images.shape).astype(np.uint8))
        return faces

    monkeypatch.setattr(facesets.FaceSets, "_base", base)
    weights = {}
    for arm, cell in _train_arms(config, out).items():
        state = torch.load(cell.folder / "checkpoints" / "latest.pt", map_location="cpu", weights_only=False)
        weights[arm] = {**state["modules"]["model"], **{f"ema.{k}": v for k, v in state["ema"]["model"].items()}}
    return weights


def test_no_adapting_arm_reads_a_target_label_or_a_target_test_face(tmp_path, monkeypatch):
    clean = _train_adapting_cells(tmp_path / "clean", False, monkeypatch)
    poisoned = _train_adapting_cells(tmp_path / "poisoned", True, monkeypatch)
    pseudo = next((tmp_path / "clean" / "cells").glob("self_train-s0-*/pseudo_labels.json"))
    assert pseudo.is_file()
    for arm, weights in clean.items():
        assert weights.keys() == poisoned[arm].keys()
        changed = [k for k, v in weights.items() if not torch.equal(v, poisoned[arm][k])]
        assert not changed, (arm, changed[:3])
    # The weights do depend on the target's train faces: AdaBN moved the statistics of source-only.
    assert any(not torch.equal(v, clean["source_only"][k]) for k, v in clean["adabn"].items())


def test_the_study_hands_class_balancing_to_max_softmax_self_training_only(tmp_path, monkeypatch):
    """`options.adapt.balance_classes` reaches the step of a self-training cell, and not the step
    of an SA-grade one (whose selection cannot be balanced)."""
    import transfer.adaptation as adaptation

    handed = {}

    class Recording(adaptation.SelfTrainStep):
        def __init__(self, *args, selection="max_softmax", balance_classes=False, **kwargs):
            handed[selection] = balance_classes
            super().__init__(*args, selection=selection, balance_classes=balance_classes, **kwargs)

    monkeypatch.setattr(adaptation, "SelfTrainStep", Recording)
    config = _adapting_config(tmp_path, ["self_train", "self_train_sa"])
    config.options.adapt.balance_classes = True
    _train_arms(config, tmp_path)
    assert handed == {"max_softmax": True, "sa_grade": False}
