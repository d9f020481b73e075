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
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from engine.errors import FaceganError

__all__ = ["Pair", "make_pairs", "write_pairs", "read_pairs", "pair_scores", "embed_faces", "verification_folds",
           "roc_curve", "pairwise_auc"]



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
