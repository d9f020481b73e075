"""Train/val/test splits that never put one person in two splits.

Policy used by every reader:
- a dataset with an official split (CelebA's partition file, ChaLearn's train/valid/test files,
  a MORPH protocol given as per-split lists, a `split` column) keeps it;
- otherwise the reader calls `identity_disjoint_split` with a fixed default seed, so the same
  files always give the same split (LFW, UTKFace, a single MORPH list, a folder CSV without a
  `split` column). Adience is the exception: its protocol is 5-fold cross-validation, so it
  exposes `meta["fold"]` and only assigns splits when asked for a test fold.

`identity_disjoint_split` groups records that must stay together: records sharing an
`identity`, and records sharing a `group_key` (e.g. UTKFace's byte-identical duplicate groups,
which carry different ages and would otherwise leak between train and test). The two relations
are merged (union-find), so a group is never cut by either. Records with neither fall back to
one group per file. Groups are shuffled with a seed derived from `seed` and laid end to end;
each group goes to the split its midpoint falls in, so the fractions are met to within one
group. Sizes are counted in images (`balance="images"`) or in groups/people
(`balance="groups"`, what `resplit_by_identity` uses to hold out "a fraction of the people").

`resplit_by_identity` replaces an official split by an identity-disjoint one; CelebA's
official test split holds only 14 identities in the shared subset, too few to measure
anything per person. `kfold_split` deals the shuffled people round-robin into k folds, one of
which is the test split: over the k folds every person is tested exactly once.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Callable, Hashable, Iterable, Sequence, TypeVar

from data_prep.datasets.base import FaceDataset
from data_prep.datasets.record import SPLITS, SampleRecord
from engine.errors import FaceganError
from engine.reproducibility import derive_seed

__all__ = [
    "SplitError",
    "GroupKey",
    "DEFAULT_FRACTIONS",
    "identity_disjoint_split",
    "resplit_by_identity",
    "kfold_split",
    "resplit_kfold",
    "ensure_splits",
    "split_groups",
    "split_leaks",
]

GroupKey = str | Callable[[SampleRecord], Hashable | None]
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)

_T = TypeVar("_T", FaceDataset, list)


class SplitError(FaceganError, ValueError):
    """Split fractions or options that cannot be satisfied."""


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3:
        raise SplitError(f"fractions must be (train, val, test), got {tuple(fractions)}")
    values = tuple(float(f) for f in fractions)
    if any(f < 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise SplitError(f"fractions must be non-negative and sum to 1, got {values}")
    return values  # type: ignore[return-value]


def _resolve_fractions(
    fractions: Sequence[float], test_fraction: float | None, val_fraction: float
) -> tuple[float, float, float]:
    if test_fraction is None:
        return _check_fractions(fractions)
    if not 0 <= test_fraction <= 1 or not 0 <= val_fraction <= 1 or test_fraction + val_fraction > 1:
        raise SplitError(
            f"test_fraction={test_fraction} and val_fraction={val_fraction} must lie in [0, 1] and sum to <= 1"
        )
    return _check_fractions((1.0 - test_fraction - val_fraction, val_fraction, test_fraction))


def _group_value(record: SampleRecord, group_key: GroupKey | None) -> Hashable | None:
    if group_key is None:
        return None
    if isinstance(group_key, str):
        return record.meta.get(group_key)
    return group_key(record)


def split_groups(records: Sequence[SampleRecord], group_key: GroupKey | None = None) -> list[str]:
    """The group name of each record: records sharing an identity or a group-key value share a
    group (transitively). The name is the smallest member key, so it does not depend on order."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:  # path compression keeps long chains cheap
            parent[node], node = root, parent[node]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            parent[rb] = ra

    record_nodes: list[str] = []
    for record in records:
        nodes = []
        if record.identity is not None:
            nodes.append(f"id:{record.identity}")
        group = _group_value(record, group_key)
        if group is not None:
            nodes.append(f"group:{group}")
        if not nodes:
            nodes.append(f"file:{record.path}")
        for node in nodes:
            parent.setdefault(node, node)
        for node in nodes[1:]:
            union(nodes[0], node)
        record_nodes.append(nodes[0])
    return [find(node) for node in record_nodes]


def identity_disjoint_split(
    records: Iterable[SampleRecord],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    test_fraction: float | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    group_key: GroupKey | None = None,
    balance: str = "images",
) -> list[SampleRecord]:
    """Records with `split` set so that no identity (or group) is in two splits.

    `fractions` = (train, val, test); or give `test_fraction` (and optionally `val_fraction`)
    and the rest is train. `group_key` is a `meta` key or a callable giving records that must
    stay together. `balance` counts the fractions in "images" or "groups". Deterministic for a
    given seed and set of records, whatever their order.
    """
    records = list(records)
    targets = _resolve_fractions(fractions, test_fraction, val_fraction)
    if balance not in ("images", "groups"):
        raise SplitError(f"balance must be 'images' or 'groups', not {balance!r}")
    if not records:
        return []
    groups = split_groups(records, group_key)
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    order = sorted(members)
    random.Random(derive_seed(seed, "identity_disjoint_split")).shuffle(order)

    weights = [len(members[g]) if balance == "images" else 1 for g in order]
    total = float(sum(weights))
    bounds = [targets[0], targets[0] + targets[1], 1.0]
    assignment: list[int] = []
    position = 0.0
    for weight in weights:
        middle = (position + weight / 2.0) / total
        position += weight
        assignment.append(
            next((i for i, b in enumerate(bounds) if middle < b and targets[i] > 0), _last_positive(targets))
        )
    _fill_empty_splits(assignment, weights, targets)

    split_of_group = {g: SPLITS[a] for g, a in zip(order, assignment)}
    return [record.with_split(split_of_group[group]) for record, group in zip(records, groups)]


def _last_positive(targets: Sequence[float]) -> int:
    return max(i for i, t in enumerate(targets) if t > 0)


def _fill_empty_splits(assignment: list[int], weights: list[int], targets: Sequence[float]) -> None:
    """Give every split with a positive fraction at least one group when there are enough
    groups: tiny datasets would otherwise get an empty val or test split."""
    wanted = [i for i, t in enumerate(targets) if t > 0]
    if len(assignment) < len(wanted):
        return
    for split in wanted:
        if split in assignment:
            continue
        counts = {s: assignment.count(s) for s in wanted}
        donor = max((s for s in wanted if counts[s] > 1), key=lambda s: counts[s], default=None)
        if donor is None:
            return
        # Move the donor's smallest group, which disturbs the donor's fraction least.
        candidates = [i for i, a in enumerate(assignment) if a == donor]
        assignment[min(candidates, key=lambda i: weights[i])] = split


def resplit_by_identity(
    data: _T,
    test_fraction: float,
    *,
    val_fraction: float = 0.0,
    seed: int = 0,
    group_key: GroupKey | None = None,
) -> _T:
    """Replace any (official) split by an identity-disjoint one that holds out `test_fraction`
    (and `val_fraction`) of the people. Accepts a FaceDataset or a list of records and returns
    the same kind."""
    records = data.records if isinstance(data, FaceDataset) else list(data)
    resplit = identity_disjoint_split(
        records,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        group_key=group_key,
        balance="groups",
    )
    return data.with_records(resplit) if isinstance(data, FaceDataset) else resplit


def kfold_split(
    records: Iterable[SampleRecord],
    folds: int,
    fold: int,
    *,
    val_fraction: float = 0.0,
    seed: int = 0,
    group_key: GroupKey | None = None,
) -> list[SampleRecord]:
    """Records with `split` set for fold `fold` of `folds`: the people (groups, as in
    `identity_disjoint_split`) are shuffled with a seed derived from `seed` and dealt round-robin
    into the folds, so fold sizes differ by at most one person; fold `fold` is "test", and
    `val_fraction` of the other people (the first of them in the shuffled order) is "val"."""
    if folds < 2 or not 0 <= fold < folds:
        raise SplitError(f"k-fold splits need folds >= 2 and 0 <= fold < folds, got fold {fold} of {folds}")
    if not 0 <= val_fraction < 1:
        raise SplitError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    records = list(records)
    if not records:
        return []
    groups = split_groups(records, group_key)
    order = sorted(set(groups))
    if len(order) < folds:
        raise SplitError(f"{folds} folds need at least {folds} people (or groups); these records have {len(order)}")
    random.Random(derive_seed(seed, "kfold_split")).shuffle(order)
    rest = [g for i, g in enumerate(order) if i % folds != fold]
    val = set(rest[:round(val_fraction * len(rest))])
    split_of_group = {g: "test" if i % folds == fold else "val" if g in val else "train" for i, g in enumerate(order)}
    return [record.with_split(split_of_group[group]) for record, group in zip(records, groups)]


def resplit_kfold(data: _T, folds: int, fold: int, *, val_fraction: float = 0.0, seed: int = 0,
                  group_key: GroupKey | None = None) -> _T:
    """`kfold_split` of a FaceDataset or a list of records, returning the same kind."""
    records = data.records if isinstance(data, FaceDataset) else list(data)
    resplit = kfold_split(records, folds, fold, val_fraction=val_fraction, seed=seed, group_key=group_key)
    return data.with_records(resplit) if isinstance(data, FaceDataset) else resplit


def ensure_splits(
    data: FaceDataset,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    seed: int = 0,
    group_key: GroupKey | None = None,
) -> FaceDataset:
    """Keep the dataset's split when every record has one; otherwise derive an
    identity-disjoint split for all records."""
    if data.records and all(r.split is not None for r in data.records):
        return data
    return data.with_records(identity_disjoint_split(data.records, fractions, seed=seed, group_key=group_key))


def split_leaks(records: Iterable[SampleRecord], group_key: GroupKey | None = None) -> dict[str, set[str]]:
    """Identities (and group-key values) that occur in more than one split, with their splits;
    empty when the split is identity-disjoint."""
    seen: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record.split is None:
            continue
        if record.identity is not None:
            seen[f"id:{record.identity}"].add(record.split)
        group = _group_value(record, group_key)
        if group is not None:
            seen[f"group:{group}"].add(record.split)
    return {key: splits for key, splits in seen.items() if len(splits) > 1}
