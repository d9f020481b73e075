"""The study's numbers from predictions: matrix, verdicts, residual gap, and a secondary task
that one domain's test split does not label."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from data_prep.datasets.schema import LabelSchema
from data_prep.face_array import FaceArray
from transfer.analysis import analyse, sentences
from transfer.arms import recipe_for
from transfer.config import StudyConfig

SCHEMA = LabelSchema.binary(["Male", "Smiling"])


def _faces(n, smiling_known=True, seed=0):
    rng = np.random.default_rng(seed)
    targets = torch.from_numpy(rng.integers(0, 2, (n, 2)).astype(np.float32))
    mask = torch.ones(n, 2, dtype=torch.bool)
    if not smiling_known:
        mask[:, 1] = False
    return FaceArray(np.zeros((n, 8, 8, 3), np.uint8), targets, mask, SCHEMA, [f"p{i // 3}" for i in range(n)])


class FakeSets:
    def __init__(self):
        self.faces = {"a/train": _faces(60, seed=1), "a/test": _faces(45, seed=2), "b/train": _faces(60, seed=3),
                      "b/test": _faces(45, smiling_known=False, seed=4)}

    def get(self, name):
        return self.faces[name]

    def domain_splits(self, domain):
        return SimpleNamespace(train=self.faces[f"{domain}/train"], val=[], test=self.faces[f"{domain}/test"])

    def skipped(self, domain):
        return 0


def test_matrix_verdicts_and_an_unlabelled_secondary_task():
    config = StudyConfig(domains={"a": None, "b": None}, directions=["a->b"], tasks=["Male", "Smiling"],
                         arms=["source_only", "target_only"], seeds=[0])
    config.domains = {"a": SimpleNamespace(source="x", root=""), "b": SimpleNamespace(source="y", root="")}
    config.stats.n_boot = 200
    sets = FakeSets()
    recipes = {("a", "b", arm): recipe_for(arm, "a", "b", config) for arm in config.arms}
    assignment = {("a", "b", "source_only"): ["s"], ("a", "b", "target_only"): ["t"]}
    truth = {d: sets.get(f"{d}/test").targets.numpy().astype(int) for d in ("a", "b")}
    arrays = {
        # source-only: right on a, always "1" on b; the oracle: right on b.
        "s": {"a::Male::pred": truth["a"][:, 0], "b::Male::pred": np.ones(45, int),
              "a::Smiling::pred": truth["a"][:, 1], "b::Smiling::pred": np.ones(45, int)},
        "t": {"a::Male::pred": 1 - truth["a"][:, 0], "b::Male::pred": truth["b"][:, 0],
              "a::Smiling::pred": truth["a"][:, 1], "b::Smiling::pred": np.ones(45, int)},
    }
    outputs = {k: {"arrays": v} for k, v in arrays.items()}
    results = analyse(config, [("a", "b")], recipes, assignment, outputs, sets)
    male = results["tasks"]["Male"]["a->b"]
    assert male["matrix"]["source_only"]["a"]["balanced_accuracy"]["mean"] == 1.0
    assert male["matrix"]["source_only"]["b"]["balanced_accuracy"]["mean"] == 0.5  # a constant prediction
    assert male["matrix"]["target_only"]["b"]["balanced_accuracy"]["mean"] == 1.0
    assert male["matrix"]["target_only"]["a"]["balanced_accuracy"]["mean"] == 0.0
    verdict = male["verdicts"]["target_only"]
    assert verdict["verdict"] == "better" and verdict["difference"] == 0.5 and verdict["holm_low"] > 0
    assert male["test_groups"]["b"] == "identities" and male["majority"]["b"]["balanced_accuracy"] == 0.5
    assert any("50.0 points below the oracle" in line for line in sentences(male, "Male"))
    assert "One seed" in sentences(male, "Male")[-1]
    smiling = results["tasks"]["Smiling"]["a->b"]
    assert smiling["matrix"]["source_only"]["b"] is None and smiling["verdicts"] == {}
    assert smiling["matrix"]["source_only"]["a"]["accuracy"]["mean"] == 1.0
    assert "no labelled Smiling face" in sentences(smiling, "Smiling")[0]
    # what each column is scored on: labelled faces, their people, their positives
    assert male["test_faces"] == {"a": 45, "b": 45} and male["test_people"] == {"a": 15, "b": 15}
    assert male["test_positives"] == {d: int(truth[d][:, 0].sum()) for d in ("a", "b")}
    assert smiling["test_faces"]["b"] == 0 and smiling["test_positives"]["b"] == 0 and smiling["test_people"]["b"] == 0
    from transfer.study_report import _scored_on

    assert _scored_on(male, "Male") == (f"Scored on the test faces labelled for Male: a 45 faces of 15 people, "
                                        f"{male['test_positives']['a']} of them positive; b 45 faces of 15 people, "
                                        f"{male['test_positives']['b']} of them positive.")


def test_gap_sentence_does_not_claim_an_unsupported_gain():
    direction = {
        "source": "a", "target": "b",
        "matrix": {"source_only": {"b": {"balanced_accuracy": {"mean": 0.6}}},
                   "target_only": {"b": {"balanced_accuracy": {"mean": 0.9}}}},
        "verdicts": {"sr_mix": {"verdict": "no significant difference"}, "dann": {"verdict": "better"}},
        "gap": {"residual_gap": 0.2, "colour_gain": 0.1, "closed": {"sr_mix": 0.7, "dann": 0.6}},
    }
    text = " ".join(sentences(direction, "Male"))
    assert "By point estimate, closing at least half of the residual gap without target labels: sr_mix, dann." in text
    assert "sr_mix does not beat source-only by the rule above" in text and "dann does not" not in text


def test_no_drop_and_no_residual_gap_are_said_as_such():
    from transfer.analysis import _gap

    # the oracle below source-only, and colour-match above the oracle (a weak oracle: few target labels)
    matrix = {arm: {"b": {"balanced_accuracy": {"mean": value}}}
              for arm, value in {"source_only": 0.74, "target_only": 0.72, "colour_match": 0.85, "sr_mix": 0.80}.items()}
    gap = _gap(matrix, "b", ["source_only", "target_only", "colour_match", "sr_mix"])
    assert gap["residual_gap"] < 0 and gap["closed"] == {"sr_mix": None}  # no share of a gap that is not there
    direction = {"source": "a", "target": "b", "matrix": matrix,
                 "verdicts": {"sr_mix": {"verdict": "better"}, "colour_match": {"verdict": "better"}}, "gap": gap}
    text = " ".join(sentences(direction, "Male"))
    assert "2.0 points above the oracle" in text and "no domain drop" in text
    assert "no residual gap is left" in text and "closing at least half" not in text and "closes half" not in text


def test_a_costly_colour_match_puts_source_only_inside_the_residual_gap():
    from transfer.analysis import _gap

    # two colour domains: grayscale costs accuracy, so every arm near source-only 'closes' a share
    matrix = {arm: {"b": {"balanced_accuracy": {"mean": value}}}
              for arm, value in {"source_only": 0.874, "target_only": 0.929, "colour_match": 0.825, "dann": 0.863}.items()}
    gap = _gap(matrix, "b", ["source_only", "target_only", "colour_match", "dann"])
    assert gap["source_only_share"] == pytest.approx((0.874 - 0.825) / (0.929 - 0.825))
    assert gap["closed"]["dann"] == pytest.approx((0.863 - 0.825) / (0.929 - 0.825))
    direction = {"source": "a", "target": "b", "matrix": matrix, "verdicts": {"dann": {"verdict": "worse"}}, "gap": gap}
    text = " ".join(sentences(direction, "Male"))
    assert "source-only, which itself sits at 47% of it" in text
    matrix["colour_match"]["b"]["balanced_accuracy"]["mean"] = 0.90  # colour helps: no such caveat
    direction["gap"] = _gap(matrix, "b", ["source_only", "target_only", "colour_match", "dann"])
    assert "itself sits at" not in " ".join(sentences(direction, "Male"))


def test_cell_fingerprints_ignore_config_fields_added_later_at_their_defaults():
    from attributes.config import DatasetEntry
    from transfer.study import _without_later_defaults

    entry = {"source": "lfw", "identity": False, "tasks": [], "trunk": {"channels": [], "width": 0.25}}
    assert _without_later_defaults(entry) == {"source": "lfw", "tasks": [], "trunk": {"width": 0.25}}
    assert _without_later_defaults({"identity": True, "channels": [8]}) == {"identity": True, "channels": [8]}
    assert "identity" in vars(DatasetEntry())  # the field exists, so the rule above is what keeps old caches valid
