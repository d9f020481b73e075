"""Face verification (attributes/verification.py): pairs, pairs.txt, the 10-fold protocol, the ROC,
and an identity model trained, verified and used to start an attribute trunk."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attributes.verification import (
    _best_threshold,
    make_pairs,
    pairwise_auc,
    read_pairs,
    roc_curve,
    verification_folds,
    write_pairs,
)
from engine.errors import FaceganError
from transfer.cli import main


def _people(n_people=100, faces=(1, 3, 4, 6)):
    identities, paths = [], []
    for k in range(n_people):
        for j in range(faces[k % len(faces)]):
            identities.append(f"Person_{k}")
            paths.append(f"/data/lfw/Person_{k}/Person_{k}_{j + 1:04d}.jpg")
    return identities, paths


def test_pairs_are_person_disjoint_across_folds_distinct_and_seeded():
    identities, _ = _people()
    pairs = make_pairs(identities, 100, folds=10, seed=3)
    assert len(pairs) == 200
    for fold in range(10):
        in_fold = [p for p in pairs if p.fold == fold]
        assert sum(p.same for p in in_fold) == 10 and sum(not p.same for p in in_fold) == 10
    people_fold = {}
    for p in pairs:
        assert p.a != p.b
        assert (identities[p.a] == identities[p.b]) is p.same
        for face in (p.a, p.b):
            assert people_fold.setdefault(identities[face], p.fold) == p.fold  # a person lives in one fold
    assert len({(p.a, p.b) for p in pairs}) == len(pairs)
    assert make_pairs(identities, 100, folds=10, seed=3) == pairs
    assert make_pairs(identities, 100, folds=10, seed=4) != pairs
    with pytest.raises(FaceganError, match="multiple of the folds"):
        make_pairs(identities, 105, folds=10)
    with pytest.raises(FaceganError, match="distinct same-person pairs"):
        make_pairs(identities, 1000, folds=10)


def test_pairs_txt_round_trip_in_lfw_format(tmp_path):
    identities, paths = _people()
    pairs = make_pairs(identities, 20, folds=2, seed=0)
    write_pairs(tmp_path / "pairs.txt", pairs, paths, identities)
    lines = (tmp_path / "pairs.txt").read_text().splitlines()
    assert lines[0] == "2\t10" and len(lines) == 1 + 40
    same_line = lines[1].split("\t")
    assert len(same_line) == 3 and same_line[0].startswith("Person_")
    # LFW image numbers come from the file names
    first = pairs[0]
    assert int(same_line[1]) == int(paths[first.a][-8:-4]) and int(same_line[2]) == int(paths[first.b][-8:-4])
    assert len(lines[11].split("\t")) == 4
    assert read_pairs(tmp_path / "pairs.txt", paths, identities) == pairs
    # other file names are numbered by their rank within the person
    plain = [f"/celeba/{i:06d}.jpg" for i in range(len(paths))]
    write_pairs(tmp_path / "plain.txt", pairs, plain, identities)
    assert read_pairs(tmp_path / "plain.txt", plain, identities) == pairs
    (tmp_path / "bad.txt").write_text("2\t10\nPerson_0\t1\n")
    with pytest.raises(FaceganError, match="header promises"):
        read_pairs(tmp_path / "bad.txt", paths, identities)
    (tmp_path / "ghost.txt").write_text("1\t1\nNobody\t1\t2\nPerson_1\t1\tPerson_2\t1\n")
    with pytest.raises(FaceganError, match="not among the evaluated faces"):
        read_pairs(tmp_path / "ghost.txt", paths, identities)


def test_roc_and_threshold_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    same = np.array([True, False, True, False])
    fpr, tpr, _ = roc_curve(scores, same)
    assert np.allclose(fpr, [0, 0, 0.5, 0.5, 1]) and np.allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)  # 3 of the 4 (same, different) pairs are ordered right
    # the best cut: everything above 0.65 is "same" (3 of 4 right), or only 0.9 (3 of 4): the first maximum wins
    threshold = _best_threshold(scores, same)
    assert ((scores > threshold) == same).mean() == 0.75
    separable = np.array([0.1, 0.2, 0.8, 0.9, 0.15, 0.85])
    labels = np.array([False, False, True, True, False, True])
    result = verification_folds(separable, labels, np.array([0, 0, 0, 1, 1, 1]))
    assert result["accuracy_mean"] == 1.0 and result["auc"] == 1.0
    # the threshold of each fold comes from the OTHER fold only
    assert 0.2 < result["thresholds"][0] < 0.85 and 0.2 < result["thresholds"][1] < 0.8


def test_pairwise_auc_on_clustered_embeddings():
    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    people = [f"p{k}" for k in range(5) for _ in range(4)]
    noisy = centres.repeat_interleave(4, 0) + 0.05 * torch.randn(20, 16)
    assert pairwise_auc(torch.nn.functional.normalize(noisy, dim=1), people) > 0.99
    random = torch.nn.functional.normalize(torch.randn(20, 16), dim=1)
    assert pairwise_auc(random, people) < 0.8
    assert pairwise_auc(random[:4], people[:4]) is None  # one person: no different pairs


def test_identity_model_trains_verifies_and_starts_an_attribute_trunk(tmp_path, train_attributes):
    split = ["--set", "datasets.synthetic.test_fraction=0.4", "--set", "datasets.synthetic.val_fraction=0.2"]
    run = train_attributes(tmp_path, "identity", 20, "--identity", "--set", "datasets.synthetic.tasks=[Male]",
                           "--center-loss", "0.01", *split)
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    schema = {t["name"]: t for t in state["run_config"]["schemas"]["synthetic"]}
    assert schema["Identity"]["kind"] == "categorical" and len(schema["Identity"]["classes"]) == 16  # 40% test, 20% val
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert 0.0 <= evals[-1]["synthetic/Identity_verification_auc"] <= 1.0  # held-out val people

    out = tmp_path / "verify"
    argv = ["attributes", "verify", str(run / "checkpoints" / "latest.pt"), "--out", str(out), "--pairs", "40",
            "--folds", "4"]
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["pairs"] == {"same": 40, "different": 40, "folds": 4, "seed": 0, "file": "pairs.txt"}
    assert result["people"] == 16 and result["people_seen_in_training"] == 0
    assert 0.0 <= result["accuracy_mean"] <= 1.0 and len(result["fold_accuracies"]) == 4
    assert (out / "roc.png").stat().st_size > 0 and "person-disjoint" in (out / "report.md").read_text()
    again = tmp_path / "again"
    assert main([*argv[:3], "--out", str(again), "--pairs-file", str(out / "pairs.txt")]) == 0
    assert json.loads((again / "results.json").read_text())["fold_accuracies"] == result["fold_accuracies"]

    # the attribute evaluation still runs: test people have no identity label, so the head is skipped there
    assert main(["attributes", "eval", str(run / "checkpoints" / "latest.pt"), "--out", str(tmp_path / "eval")]) == 0

    # --init-from: an attribute model whose trunk starts as the identity model's (EMA) trunk
    from attributes.model import ModelConfig, build_attribute_model
    from attributes.trunks import TrunkConfig
    from data_prep.datasets.schema import LabelSchema

    config = ModelConfig(trunk=TrunkConfig("alexnet_bn", 64, 0.125, checkpoint=str(run / "checkpoints" / "latest.pt")))
    model = build_attribute_model(config, {"synthetic": LabelSchema.binary(["Male"])})
    ema = state["ema"]["model"]
    for key, value in model.trunk.state_dict().items():
        assert torch.equal(value, ema[f"trunk.{key}"]), key
    assert main(["attributes", "verify", str(run / "checkpoints" / "latest.pt"), "--out", str(tmp_path / "x"),
                 "--on", "nowhere"]) == 2
