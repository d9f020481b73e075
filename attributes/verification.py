"""Face verification with an identity model: LFW-style pairs, the 10-fold protocol, and a ROC.

Protocol (as LFW's View 2):
- pairs come from people the model never trained on (an identity-disjoint test split). People
  are dealt into `folds` person-disjoint folds, seeded; each fold holds n/folds same-person
  pairs (two different images of one of its people) and n/folds different-person pairs (two of
  its people). No pair repeats. The pairs are saved in LFW's `pairs.txt` format, so a run can
  be repeated on the same pairs (`read_pairs`) and compared with other tools;
- a face's descriptor is the identity head's fc_feature embedding (before dropout), summed
  over the face and its mirror image, L2-normalised; a pair's score is the cosine similarity;
- for each fold, the threshold that maximises accuracy on the other folds is applied to it.
  The result is the mean accuracy +- sd over folds, plus the ROC and its AUC over all pairs.

`verify_checkpoint` (`facegan attributes verify`) runs the protocol on a trained model.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from engine.checkpoint import atomic_write_text
from engine.errors import FaceganError

__all__ = ["Pair", "make_pairs", "write_pairs", "read_pairs", "pair_scores", "embed_faces", "verification_folds",
           "roc_curve", "pairwise_auc", "verify_checkpoint"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    a: int  # face positions in the evaluated cache view
    b: int
    same: bool
    fold: int


def _people(identities: Sequence[str | None]) -> dict[str, list[int]]:
    people: dict[str, list[int]] = {}
    for index, person in enumerate(identities):
        if person is not None:
            people.setdefault(str(person), []).append(index)
    return people


def make_pairs(identities: Sequence[str | None], n_pairs: int, folds: int = 10, seed: int = 0) -> list[Pair]:
    """`n_pairs` same-person and `n_pairs` different-person pairs in `folds` person-disjoint folds."""
    if folds < 2:
        raise FaceganError("verification needs at least 2 folds")
    if n_pairs % folds:
        raise FaceganError(f"the number of pairs ({n_pairs}) must be a multiple of the folds ({folds})")
    per_fold = n_pairs // folds
    people = _people(identities)
    rng = np.random.default_rng(seed)
    # Deal the people with two or more faces and the others separately, so each fold gets its share of both.
    several = sorted(p for p, faces in people.items() if len(faces) >= 2)
    single = sorted(p for p, faces in people.items() if len(faces) < 2)
    fold_people: list[list[str]] = [[] for _ in range(folds)]
    for group in (several, single):
        for i, person in enumerate(rng.permutation(group).tolist()):
            fold_people[i % folds].append(person)
    pairs: list[Pair] = []
    for fold, members in enumerate(fold_people):
        repeat = [p for p in members if len(people[p]) >= 2]
        if not repeat or len(members) < 2:
            raise FaceganError(f"fold {fold} has {len(repeat)} people with two faces and {len(members)} people in all: "
                               f"too few for verification pairs; use fewer folds or a larger test split")
        same = _draw(rng, per_fold, lambda: _same_pair(rng, people, repeat), f"same-person pairs in fold {fold}")
        different = _draw(rng, per_fold, lambda: _different_pair(rng, people, members), f"different-person pairs in fold {fold}")
        pairs += [Pair(a, b, True, fold) for a, b in same] + [Pair(a, b, False, fold) for a, b in different]
    return pairs


def _same_pair(rng, people, candidates) -> tuple[int, int]:
    faces = people[candidates[rng.integers(len(candidates))]]
    a, b = rng.choice(len(faces), size=2, replace=False)
    return tuple(sorted((faces[a], faces[b])))


def _different_pair(rng, people, members) -> tuple[int, int]:
    p, q = rng.choice(len(members), size=2, replace=False)
    a = people[members[p]][rng.integers(len(people[members[p]]))]
    b = people[members[q]][rng.integers(len(people[members[q]]))]
    return tuple(sorted((a, b)))


def _draw(rng, count: int, draw, what: str) -> list[tuple[int, int]]:
    chosen: dict[tuple[int, int], None] = {}
    for _ in range(count * 50):
        if len(chosen) == count:
            break
        chosen.setdefault(draw(), None)
    if len(chosen) < count:
        raise FaceganError(f"could only draw {len(chosen)} distinct {what}, {count} needed: the split has too few "
                           f"faces; ask for fewer pairs")
    return list(chosen)


# -- pairs.txt --------------------------------------------------------------------------------------
_NUMBER = re.compile(r"_(\d+)\.[A-Za-z]+$")


def _image_numbers(paths: Sequence[str], identities: Sequence[str | None]) -> list[int]:
    """LFW's image number of each face (`Name_0003.jpg` -> 3); for other file names, the face's
    1-based rank among its person's files sorted by path."""
    numbers = [None] * len(paths)
    for person, faces in _people(identities).items():
        parsed = [_NUMBER.search(Path(paths[i]).name) for i in faces]
        if all(parsed) and len({int(m.group(1)) for m in parsed}) == len(faces):
            for i, m in zip(faces, parsed):
                numbers[i] = int(m.group(1))
        else:
            for rank, i in enumerate(sorted(faces, key=lambda i: paths[i]), 1):
                numbers[i] = rank
    return numbers


def write_pairs(path: str | Path, pairs: Sequence[Pair], paths: Sequence[str], identities: Sequence[str | None]) -> None:
    """LFW's pairs.txt: a "folds<TAB>n" line, then per fold n "name i j" lines and n "name1 i name2 j" lines."""
    from engine.checkpoint import atomic_write_text

    numbers = _image_numbers(paths, identities)
    folds = max(p.fold for p in pairs) + 1
    per_fold = sum(1 for p in pairs if p.fold == 0 and p.same)
    lines = [f"{folds}\t{per_fold}"]
    for fold in range(folds):
        for same in (True, False):
            chosen = [p for p in pairs if p.fold == fold and p.same is same]
            if len(chosen) != per_fold:
                raise ValueError(f"fold {fold} has {len(chosen)} {'same' if same else 'different'} pairs, not {per_fold}")
            for p in chosen:
                if same:
                    lines.append(f"{identities[p.a]}\t{numbers[p.a]}\t{numbers[p.b]}")
                else:
                    lines.append(f"{identities[p.a]}\t{numbers[p.a]}\t{identities[p.b]}\t{numbers[p.b]}")
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def read_pairs(path: str | Path, paths: Sequence[str], identities: Sequence[str | None]) -> list[Pair]:
    """The pairs of a pairs.txt, as positions in the faces described by `paths`/`identities`."""
    path = Path(path)
    try:
        lines = [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise FaceganError(f"cannot read pairs file {path}: {exc}") from None
    numbers = _image_numbers(paths, identities)
    where = {(str(person), number): i for i, (person, number) in enumerate(zip(identities, numbers)) if person is not None}
    try:
        folds, per_fold = (int(x) for x in lines[0].split())
    except (ValueError, IndexError):
        raise FaceganError(f"{path}:1: expected 'folds<TAB>pairs per fold'") from None
    if len(lines) != 1 + folds * 2 * per_fold:
        raise FaceganError(f"{path}: {len(lines) - 1} pair lines, but the header promises {folds * 2 * per_fold}")
    pairs = []
    for k, line in enumerate(lines[1:]):
        fold, same = k // (2 * per_fold), (k % (2 * per_fold)) < per_fold
        fields = line.split("\t")
        try:
            if same and len(fields) == 3:
                a, b = where[(fields[0], int(fields[1]))], where[(fields[0], int(fields[2]))]
            elif not same and len(fields) == 4:
                a, b = where[(fields[0], int(fields[1]))], where[(fields[2], int(fields[3]))]
            else:
                raise FaceganError(f"{path}:{k + 2}: a {'same' if same else 'different'}-person line needs "
                                   f"{3 if same else 4} tab-separated fields, got {len(fields)}")
        except KeyError as exc:
            raise FaceganError(f"{path}:{k + 2}: face {exc.args[0]} is not among the evaluated faces") from None
        except ValueError:
            raise FaceganError(f"{path}:{k + 2}: image numbers must be integers: {line!r}") from None
        pairs.append(Pair(a, b, same, fold))
    return pairs


# -- scores and the protocol ----------------------------------------------------------------------
@torch.no_grad()
def embed_faces(model, cache, subnet: str, batch_size: int = 256, device: torch.device | str = "cpu",
                flip: bool = True) -> torch.Tensor:
    """L2-normalised embeddings (N, D) of every face of `cache` from `subnet`'s fc_feature."""
    from attributes.inference import to_model_input

    model.eval()
    chunks = []
    for start in range(0, len(cache), batch_size):
        x = to_model_input(cache.get_batch(np.arange(start, min(len(cache), start + batch_size))).to(device))
        e = model.embed(x, subnet).float()
        if flip:
            e = e + model.embed(x.flip(-1), subnet).float()
        chunks.append(torch.nn.functional.normalize(e, dim=1).cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, model.feature_dim)


def pair_scores(embeddings: torch.Tensor, pairs: Sequence[Pair]) -> np.ndarray:
    a = torch.tensor([p.a for p in pairs])
    b = torch.tensor([p.b for p in pairs])
    return (embeddings[a] * embeddings[b]).sum(1).numpy().astype(np.float64)


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (a midpoint between sorted scores) with the highest accuracy of `score > t`."""
    order = np.argsort(scores)
    s, y = scores[order], same[order].astype(np.int64)
    # accuracy when the first k (lowest) scores are called "different": negatives below + positives above
    negatives_below = np.concatenate([[0], np.cumsum(1 - y)])
    positives_above = y.sum() - np.concatenate([[0], np.cumsum(y)])
    correct = negatives_below + positives_above
    k = int(np.argmax(correct))
    if k == 0:
        return float(s[0] - 1e-6)
    if k == len(s):
        return float(s[-1] + 1e-6)
    return float((s[k - 1] + s[k]) / 2)


def verification_folds(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """Accuracy per fold with the threshold chosen on the other folds; mean and sd over folds."""
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        test = folds == fold
        threshold = _best_threshold(scores[~test], same[~test])
        accuracies.append(float(((scores[test] > threshold) == same[test]).mean()))
        thresholds.append(threshold)
    fpr, tpr, _ = roc_curve(scores, same)
    return {"accuracy_mean": float(np.mean(accuracies)), "accuracy_sd": float(np.std(accuracies, ddof=1)),
            "fold_accuracies": accuracies, "thresholds": thresholds, "auc": float(np.trapezoid(tpr, fpr))}


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates over every threshold (from the highest score down)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order].astype(np.float64)
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp, fp = np.cumsum(y)[distinct], np.cumsum(1 - y)[distinct]
    tpr = np.r_[0.0, tp / max(1.0, y.sum())]
    fpr = np.r_[0.0, fp / max(1.0, (1 - y).sum())]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def pairwise_auc(embeddings: torch.Tensor, identities: Sequence[str | None], max_faces: int = 600, seed: int = 0) -> float | None:
    """ROC AUC of cosine similarity over every pair of (at most `max_faces`, seeded) faces: a
    cheap validation signal for an identity head on held-out people. None without both kinds of pair."""
    known = [i for i, p in enumerate(identities) if p is not None]
    if len(known) > max_faces:
        known = sorted(np.random.default_rng(seed).choice(known, size=max_faces, replace=False).tolist())
    if len(known) < 3:
        return None
    e = embeddings[torch.tensor(known)]
    people = np.array([str(identities[i]) for i in known])
    upper = np.triu_indices(len(known), k=1)
    scores = (e @ e.t()).numpy()[upper].astype(np.float64)
    same = (people[:, None] == people[None, :])[upper]
    if same.all() or not same.any():
        return None
    fpr, tpr, _ = roc_curve(scores, same)
    return float(np.trapezoid(tpr, fpr))


# ------------------------------------------------------------------ the verify job
def verify_checkpoint(checkpoint: str | Path, out_dir: str | Path, on: str | None = None, head: str | None = None,
                      split: str = "test", n_pairs: int = 1000, folds: int = 10, seed: int = 0,
                      pairs_file: str | Path | None = None, device: str = "cpu", batch_size: int = 256,
                      use_ema: bool = True, work_dir: str | Path | None = None) -> dict:
    """Verify the people of `split` of dataset `on` with the identity head of dataset `head`;
    writes OUT/pairs.txt, OUT/results.json, OUT/report.md and OUT/roc.png."""
    from attributes.data import open_split
    from attributes.inference import load_attribute_model, single_network
    from data_prep.cache import IDENTITY_TASK

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_attribute_model(checkpoint, use_ema=use_ema, device=device)
    model = single_network(loaded, "verification")
    identity_heads = {name: g for name, groups in model.groups.items() for g in groups if g.name == IDENTITY_TASK}
    if not identity_heads:
        raise FaceganError(f"{checkpoint} has no identity head; train one with `facegan attributes train --identity`")
    on = on or next(iter(identity_heads))
    if on not in loaded.config.datasets:
        raise FaceganError(f"{checkpoint} was not trained with a dataset named {on!r}; it has {list(loaded.config.datasets)}")
    head = head or (on if on in identity_heads else next(iter(identity_heads)))
    if head not in identity_heads:
        raise FaceganError(f"dataset {head!r} has no identity head in {checkpoint}; these do: {list(identity_heads)}")
    work = Path(work_dir) if work_dir else Path(checkpoint).resolve().parent.parent
    cache = open_split(loaded.config.datasets[on], model.input_size, split, work)
    identities = [r.identity for r in cache.records]
    paths = [str(r.path) for r in cache.records]
    trained_people = set(identity_heads[head].tasks[0].classes)
    overlap = {p for p in identities if p is not None} & trained_people
    if overlap and on == head:
        log.warning("%d people of %s/%s were also identity classes in training; the result is not on unseen people",
                    len(overlap), on, split)
    if pairs_file:
        pairs = read_pairs(pairs_file, paths, identities)
    else:
        pairs = make_pairs(identities, n_pairs, folds, seed)
    write_pairs(out_dir / "pairs.txt", pairs, paths, identities)
    embeddings = embed_faces(model, cache, identity_heads[head].subnet, batch_size, device)
    scores = pair_scores(embeddings, pairs)
    same = np.array([p.same for p in pairs])
    fold_of = np.array([p.fold for p in pairs])
    result = verification_folds(scores, same, fold_of)
    result.update({
        "checkpoint": str(checkpoint), "step": loaded.step, "weights": "ema" if use_ema else "raw",
        "dataset": on, "split": split, "head": head, "faces": len(cache),
        "people": len({p for p in identities if p is not None}), "people_seen_in_training": len(overlap),
        "pairs": {"same": int(same.sum()), "different": int((~same).sum()), "folds": int(fold_of.max() + 1),
                  "seed": seed, "file": str(pairs_file) if pairs_file else "pairs.txt"},
        "descriptor": "identity head fc_feature before dropout, face + mirror summed, L2-normalised; cosine similarity",
    })
    fpr, tpr, _ = roc_curve(scores, same)
    _plot_roc(fpr, tpr, result, out_dir / "roc.png")
    atomic_write_text(out_dir / "results.json", json.dumps(result, indent=2))
    atomic_write_text(out_dir / "report.md", _report(result))
    return result


def _plot_roc(fpr: np.ndarray, tpr: np.ndarray, result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=1.5, label=f"AUC {result['auc']:.3f}; acc {100 * result['accuracy_mean']:.1f}%")
    ax.plot([0, 1], [0, 1], ls=":", c="gray", lw=1)
    ax.set(xlabel="false accept rate", ylabel="true accept rate", xlim=(0, 1), ylim=(0, 1),
           title=f"verification: {result['dataset']}/{result['split']}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(result: dict) -> str:
    folds = result["fold_accuracies"]
    return "\n".join([
        f"# Face verification: {result['dataset']} ({result['split']} split)", "",
        f"- checkpoint: `{result['checkpoint']}` (step {result['step']}, {result['weights']} weights), identity head of "
        f"`{result['head']}`",
        f"- faces: {result['faces']} of {result['people']} people ({result['people_seen_in_training']} seen in training)",
        f"- pairs: {result['pairs']['same']} same-person and {result['pairs']['different']} different-person, in "
        f"{result['pairs']['folds']} person-disjoint folds (seed {result['pairs']['seed']}; `{result['pairs']['file']}`)",
        f"- descriptor: {result['descriptor']}",
        "- protocol: per fold, the threshold with the best accuracy on the other folds", "",
        "| accuracy (mean ± sd over folds) | AUC |", "|---|---|",
        f"| {100 * result['accuracy_mean']:.2f} ± {100 * result['accuracy_sd']:.2f}% | {result['auc']:.4f} |", "",
        "Per fold: " + ", ".join(f"{100 * a:.1f}" for a in folds), "", "![ROC](roc.png)", "",
    ])
