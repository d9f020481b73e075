"""The cross-domain study: arms, face transforms, DANN, and a tiny study end to end on the
built-in synthetic domains (studio -> wild)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from transfer.arms import ARMS, recipe_for, faces_for_testing
from transfer.config import AugmentMixConfig, StudyConfig, faceset_parts, faceset_transform
from transfer.facesets import augment_faces, match_channel_stats, to_grayscale


# -- arms ---------------------------------------------------------------------------------------
def test_equal_recipes_share_one_training_and_mixes_keep_the_budget():
    config = StudyConfig()
    assert recipe_for("source_only", "a", "b", config).key() == recipe_for("target_only", "b", "a", config).key()
    assert recipe_for("joint", "a", "b", config).key() == recipe_for("joint", "b", "a", config).key()
    keys = [str(recipe_for(arm, "a", "b", config).key()) for arm in ARMS]
    assert len(set(keys)) == len(keys)
    sr = recipe_for("sr_mix", "a", "b", config)
    assert sr.train == (("a", "a/train + a/train|sr:b"),) and sr.needs_sr == ("b",)
    assert sr.batch_size == config.budget.batch_size
    assert recipe_for("joint", "a", "b", config).batch_size == config.budget.batch_size // 2
    assert recipe_for("dann", "a", "b", config).unlabelled == ("b/train",)
    assert faces_for_testing("b", "stats:b") == "b/test" and faces_for_testing("a", "stats:b") == "a/test|stats:b"
    assert faces_for_testing("a", "gray") == "a/test|gray" and faces_for_testing("a", "") == "a/test"


def test_face_set_names_parse_into_parts_and_transforms():
    assert faceset_parts("a/train +b/train|sr:b") == ["a/train", "b/train|sr:b"]
    assert faceset_parts("a/test") == ["a/test"]
    assert faceset_transform("a/train|sr:b") == ("a/train", "sr", "b")
    assert faceset_transform("a/test|gray") == ("a/test", "gray", "")
    assert faceset_transform("a/train") is None


def test_a_cell_fingerprint_changes_only_with_the_options_its_recipe_reads(tmp_path):
    from dataclasses import replace

    import transfer.study as study_module
    from transfer.config import ArmOptions

    config = StudyConfig()
    checkpoint = tmp_path / "sr.pt"
    checkpoint.write_bytes(b"x")
    sr = {"b": checkpoint}

    def fingerprints(options: ArmOptions) -> dict[str, str]:
        changed = replace(config, options=options)
        return {arm: study_module._cell_fingerprint(recipe_for(arm, "a", "b", changed), 0, changed, sr) for arm in ARMS}

    base = fingerprints(config.options)
    changes = {
        "colour_match": (replace(config.options, colour_match="target_stats"),
                         {"colour_match", "colour_self_train", "colour_self_train_no_adabn", "colour_teacher_self_train",
                          "combined"}),
        "dann_weight": (replace(config.options, dann_weight=1.0), {"dann"}),
        "dann_hidden": (replace(config.options, dann_hidden=7), {"dann"}),
        "augment": (replace(config.options, augment=replace(config.options.augment, blur_prob=0.0)), {"augment_mix"}),
        "degradation_seed": (replace(config.options, degradation_seed=3), {"sr_mix", "bicubic_mix", "augment_mix", "combined"}),
        "tent_lr": (replace(config.options, adapt=replace(config.options.adapt, tent_lr=0.1)), {"tent"}),
        "tent_steps": (replace(config.options, adapt=replace(config.options.adapt, tent_steps=10)), {"tent"}),
        "precision": (replace(config.options, adapt=replace(config.options.adapt, precision=0.9)),
                      {"self_train", "colour_self_train", "colour_self_train_no_adabn", "colour_teacher_self_train",
                       "combined"}),
        "self_train_fraction": (replace(config.options, adapt=replace(config.options.adapt, self_train_fraction=0.3)),
                                {"self_train", "self_train_sa", "colour_self_train", "colour_self_train_no_adabn",
                                 "colour_teacher_self_train", "combined"}),
        "sa_window_epochs": (replace(config.options, adapt=replace(config.options.adapt, sa_window_epochs=2)),
                             {"self_train_sa"}),
    }
    for name, (options, expected) in changes.items():
        after = fingerprints(options)
        assert {arm for arm in ARMS if after[arm] != base[arm]} == expected, name


def test_a_cell_cached_under_the_legacy_fingerprint_is_adopted_not_retrained(tmp_path):
    import transfer.study as study_module

    config = StudyConfig()
    recipe = recipe_for("source_only", "a", "b", config)
    legacy = study_module._cell_fingerprint(recipe, 0, config, {}, legacy=True)
    current = study_module._cell_fingerprint(recipe, 0, config, {})
    assert legacy != current
    old = study_module._cell_folder(recipe, 0, legacy, tmp_path)
    (old / "checkpoints").mkdir(parents=True)
    (old / "predictions.npz").write_bytes(b"cached")
    folder = study_module._cell_folder(recipe, 0, current, tmp_path)
    study_module._adopt_legacy_cell(recipe, 0, config, {}, folder)
    assert not old.exists() and (folder / "predictions.npz").read_bytes() == b"cached"
    # a legacy cell of another config (here another colour mode) is not this cell
    from dataclasses import replace

    other = replace(config, options=replace(config.options, colour_match="target_stats"))
    (old / "predictions.npz").parent.mkdir(parents=True)
    (old / "predictions.npz").write_bytes(b"grayscale run")
    elsewhere = tmp_path / "cells" / "fresh"
    study_module._adopt_legacy_cell(recipe, 0, other, {}, elsewhere)
    assert old.exists() and not elsewhere.exists()


# -- transforms ---------------------------------------------------------------------------------
def test_grayscale_and_colour_statistics():
    faces = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    gray = to_grayscale(faces)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    expected = (0.299 * faces[:, 0].float() + 0.587 * faces[:, 1].float() + 0.114 * faces[:, 2].float()).round()
    assert torch.equal(gray[:, 0].float(), expected)
    own = (faces.float().mean((0, 2, 3)).numpy(), faces.float().std((0, 2, 3), unbiased=False).numpy())
    wanted = (np.array([100.0, 120.0, 140.0]), np.array([10.0, 20.0, 30.0]))
    matched = match_channel_stats(faces, own, wanted).float()
    assert np.allclose(matched.mean((0, 2, 3)).numpy(), wanted[0], atol=1.5)
    assert np.allclose(matched.std((0, 2, 3), unbiased=False).numpy(), wanted[1], atol=1.5)


def test_augmented_copy_depends_on_the_face_seed_only():
    faces = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    config = AugmentMixConfig()
    together = augment_faces(faces, [1, 2, 3], config)
    alone = augment_faces(faces[1:2], [2], config)
    assert torch.equal(together[1], alone[0])
    assert not torch.equal(together, faces)
    assert not torch.equal(augment_faces(faces[1:2], [5], config), alone)


# -- DANN ---------------------------------------------------------------------------------------
def test_gradient_reversal_negates_and_scales():
    from transfer.dann import grad_reverse

    x = torch.randn(5, requires_grad=True)
    grad_reverse(x, 0.25).sum().backward()
    assert torch.allclose(x.grad, torch.full((5,), -0.25))


# -- end to end ---------------------------------------------------------------------------------
def _tiny_config(out):
    from engine.config import from_dict

    domain = {"source": "synthetic", "synthetic_identities": 40, "test_fraction": 0.3, "val_fraction": 0.1}
    sr_overrides = ["trainer.max_steps=6", "sr.pretrain_steps=4", "trainer.max_seconds=0", "sr.model.channels=8",
                    "sr.model.num_blocks=1", "sr.model.min_channels=8", "sr.model.critic_channels=4",
                    "sr.model.critic_max_channels=8", "trainer.eval_every=6", "trainer.sample_every=0",
                    "trainer.checkpoint_every=6", "data.eval_images=8", "trainer.tensorboard=false"]
    return from_dict(StudyConfig, {
        "name": "tiny", "domains": {"studio": {**domain, "synthetic_domain": "studio"},
                                    "wild": {**domain, "synthetic_domain": "wild"}},
        "directions": ["studio->wild"], "tasks": ["Male"], "seeds": [0],
        "model": {"trunk": {"name": "alexnet_bn", "input_size": 64, "width": 0.125},
                  "head": {"conv_channels": 8, "reduce_channels": 8, "feature_dim": 16}},
        "budget": {"steps": 8, "batch_size": 16, "ema_decay": 0.5, "threads": 1},
        "optim": {"warmup_steps": 2},
        "sr": {"wild": {"config": "x4-16to64-cpu", "overrides": sr_overrides}},
        "options": {"adapt": {"tent_steps": 3, "relabel_every": 2, "precision": 0.6}},
        "stats": {"n_boot": 200}, "strips": 3, "domain_gap_faces": 30, "domain_gap_embedded_faces": 24,
        "out_dir": str(out),
    })


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from transfer.study import run_study

    out = tmp_path_factory.mktemp("study")
    results = run_study(_tiny_config(out), progress=False)
    return out, results


def test_study_writes_matrix_verdicts_and_report(study):
    out, results = study
    for name in ("report.html", "results.md", "results.json"):
        assert (out / name).is_file()
    direction = results["tasks"]["Male"]["studio->wild"]
    assert set(direction["matrix"]) == set(ARMS)
    for arm, row in direction["matrix"].items():
        for domain in ("studio", "wild"):
            ba = row[domain]["balanced_accuracy"]
            assert ba["low"] <= ba["mean"] <= ba["high"], (arm, domain)
    assert direction["test_groups"]["wild"] == "identities"
    # The words follow the rule: "better" exactly when Holm's interval lies above 0.
    for arm, verdict in direction["verdicts"].items():
        assert (verdict["verdict"] == "better") == (verdict["reject"] and verdict["difference"] > 0)
        if verdict["reject"]:
            assert verdict["holm_low"] > 0 or verdict["holm_high"] < 0
    html = (out / "report.html").read_text()
    assert "Holm" in html and "SR-mix" in html
    assert f"Scored on the test faces labelled for Male: studio {direction['test_faces']['studio']} faces of" in html
    assert "people: 30% test" in html and "files (no identities" not in html  # the synthetic people split
    for image in __import__("re").findall(r"<img src='([^']+)'", html):
        assert (out / image).is_file(), image  # relative paths: the folder can be zipped as is
    # DANN trained with its domain classifier on unlabelled wild faces; the other arms did not.
    dann_log = next((out / "cells").glob("dann-*/metrics.jsonl")).read_text()
    assert '"loss/domain"' in dann_log
    assert '"loss/domain"' not in next((out / "cells").glob("source_only-*/metrics.jsonl")).read_text()
    gap = results["domain_gap"]["values"]["studio->wild"]
    assert len(gap) == 4 and all(np.isfinite(v["fd_trunk"]) and v["fd_trunk"] >= 0 for v in gap.values())
    dlib_installed = importlib.util.find_spec("dlib") is not None  # the [metrics] extra: FD-face too
    assert all((v["fd_face"] is not None and bool(np.isfinite(v["fd_face"]))) == dlib_installed for v in gap.values())
    assert "Domain gap" in html and "same-domain floor" in html
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"]["Male"]["studio->wild"]["verdicts"].keys() == direction["verdicts"].keys()


def test_every_self_training_arm_reports_its_pseudo_labels(study):
    # Arms that end in AdaBN (colour_self_train, combined) report the rounds of their
    # self-training stage, not nothing.
    _, results = study
    records = results["pseudo_labels"]["studio->wild"]
    assert set(records) == {"self_train", "self_train_sa", "colour_self_train", "colour_self_train_no_adabn",
                            "colour_teacher_self_train", "combined"}
    for arm, seeds in records.items():
        assert [s["seed"] for s in seeds] == [0], arm
        rounds = seeds[0]["rounds"]
        assert [r["step"] for r in rounds] == sorted(r["step"] for r in rounds) and rounds, arm
        assert all(0 <= r["tasks"]["Male"]["kept"] <= r["tasks"]["Male"]["of"] for r in rounds), arm


def test_sr_and_bicubic_sets_are_degraded_copies_of_the_source_faces(study):
    out, _ = study
    from transfer.facesets import FaceSets
    from transfer.study import _settle_locations

    config = _tiny_config(out)
    _settle_locations(config, out)
    sets = FaceSets(config, out, progress=False)
    sets.sr_checkpoints["wild"] = next((out / "stages").glob("sr-wild-*/checkpoints/*.pt"))
    original = sets.get("studio/train").images.astype(np.float64)
    for kind in ("bicubic", "sr"):
        copy = sets.get(f"studio/train|{kind}:wild").images.astype(np.float64)
        psnr = 10 * np.log10(255.0 ** 2 / np.mean((copy - original) ** 2))
        assert psnr > 18, (kind, psnr)  # a blurred copy of the same face, not a blank or another face
    mixed = sets.get("studio/train + studio/train|sr:wild")
    assert len(mixed) == 2 * len(original)


@pytest.mark.parametrize("cells", ["joint-*", "adabn-*", "self_train-s*", "colour_self_train-s*"])
def test_a_cell_checkpoint_opens_in_attributes_eval_and_predict(study, tmp_path, capsys, cells):
    from data_prep.assets import ASTRONAUT_JPG
    from transfer.cli import main

    out, _ = study
    checkpoint = next((out / "cells").glob(f"{cells}/checkpoints/latest.pt"))
    assert main(["attributes", "eval", str(checkpoint), "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "studio:" in printed and "Male accuracy" in printed  # the test people of the domains it trained on
    assert ("wild:" in printed) == (cells == "joint-*")
    head = "wild" if cells == "joint-*" else "studio"
    assert main(["attributes", "predict", str(checkpoint), str(ASTRONAUT_JPG), "--head", head]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert set(prediction["images"][0]["tasks"]) == {"Male"}


def test_rerun_reads_every_cell_back_instead_of_training(study, monkeypatch):
    from transfer.study import run_study

    out, first = study
    embedded_now = []
    if first["domain_gap"]["values"]["studio->wild"]["studio train"]["fd_face"] is not None:  # dlib installed
        from gan.metrics.face_embedding import FaceEmbedder

        monkeypatch.setattr(FaceEmbedder, "embed", lambda self, images: embedded_now.append(len(images)))
    again = run_study(_tiny_config(out), progress=False)
    assert again["timings"]["cells_trained_now"] == 0
    assert again["timings"]["sr_stages"] == {"wild": 0.0}
    assert again["tasks"] == first["tasks"]
    # dlib's embeddings (~0.08 s a face) are read back too: the domain-gap table costs nothing again
    assert embedded_now == [] and again["domain_gap"]["values"] == first["domain_gap"]["values"]


def test_cli_dry_run_and_bad_config_errors(tmp_path, capsys):
    from transfer.cli import main

    preset = "lfw-celeba-quick"
    assert main(["transfer", "run", preset, "--dry-run"]) == 0
    assert "43 distinct recipe(s)" in capsys.readouterr().out
    assert main(["transfer", "run", preset, "--dry-run", "--set", "arms=[source_only,magic]"]) == 2
    assert "unknown arm" in capsys.readouterr().err
    assert main(["transfer", "run", preset, "--dry-run", "--set", "directions=[lfw->nowhere]"]) == 2
    assert "unknown domain" in capsys.readouterr().err


@pytest.mark.parametrize("arm", ["source_only", "joint", "dann"])
def test_class_balanced_cells_weight_positives_by_their_own_training_prior(study, monkeypatch, arm):
    import transfer.study as study_module
    from dataclasses import replace
    from transfer.facesets import FaceSets

    out, _ = study
    config = _tiny_config(out)
    study_module._settle_locations(config, out)
    sets = FaceSets(config, out, progress=False)
    recipe = recipe_for(arm, "studio", "wild", config)
    balanced = replace(config, model=replace(config.model, head=replace(config.model.head, pos_weight=True)))
    assert (study_module._cell_fingerprint(recipe, 0, balanced, {}) != study_module._cell_fingerprint(recipe, 0, config, {}))
    captured = {}

    class NoTraining:
        def __init__(self, step, *args, **kwargs):
            captured["step"] = step

        def fit(self):
            pass

    import attributes.train  # a cell trains through the attribute trainer's one assembly

    monkeypatch.setattr(attributes.train, "Trainer", NoTraining)
    cell = study_module.Cell(recipe, 0, "x", out / "unused-cell")
    for cfg, weighted in ((config, False), (balanced, True)):
        study_module._train_cell(cell, cfg, sets, progress=False)
        step = captured["step"]
        for name, faces in recipe.train:
            group = step.model.groups[name][0]
            if not weighted:
                assert group.pos_weight is None
                continue
            cache = sets.get(faces)
            labels = cache.targets[:, group.columns][:, 0]
            p = labels[cache.mask[:, group.columns][:, 0]].float().mean()
            assert 0 < p < 1
            assert torch.allclose(group.pos_weight, ((1 - p) / p).reshape(1)), (arm, name)
