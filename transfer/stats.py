"""Statistics for the cross-domain face-attribute study: metrics, bootstrap intervals, Holm.

Protocol
--------
* **Metric.** The headline number is balanced accuracy: the mean, over the classes present in
  the ground truth, of each class's recall. Plain accuracy is reported next to it, and
  `majority_baseline` gives both numbers for the trivial "always predict the commonest training
  class" classifier, which is the floor any arm has to clear.
* **Unit of resampling.** Test sets contain several photos of the same person, and photos of one
  person are not independent (a model that fails on a face tends to fail on all of its photos).
  Confidence intervals therefore come from a *cluster* bootstrap: identities are drawn with
  replacement, as many as were observed, and every photo of a drawn identity enters the resample
  (twice if the identity was drawn twice). Without identities, each file is its own cluster,
  which is the ordinary bootstrap. Intervals are percentile intervals.
* **Seeds.** An arm trained with several seeds is scored by the mean over seeds of each seed's
  metric, computed on the *same* resample, so the interval covers test-set sampling and is not
  widened or narrowed by how the seeds happen to be paired with resamples.
* **Comparing arms.** `paired_bootstrap` resamples the identities once and scores both arms on
  that resample; the statistic is metric(a) - metric(b). Its two-sided bootstrap p-value uses the
  +1 correction so it is never 0. Several arms compared to one baseline are corrected with
  Holm-Bonferroni (`holm`), and `verdicts` calls an arm "better" (or "worse") than the baseline
  when Holm rejects "no difference" for it; the interval reported with it is the percentile
  interval at the per-comparison level Holm used, i.e. the interval whose exclusion of 0 is the
  decision rule.

Implementation note: the bootstrap never materialises resampled item lists. Every metric here is
a function of per-class counts (items of true class c, and correct ones of class c), and the
counts of a resample are the draw multiplicities of the groups times the per-group counts, so
all resamples are one matrix product.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

from attributes.metrics import balanced_accuracy

__all__ = [
    "METRICS",
    "Interval",
    "PairedResult",
    "accuracy",
    "balanced_accuracy",
    "bootstrap_ci",
    "holm",
    "majority_baseline",
    "paired_bootstrap",
    "verdicts",
]

METRICS = ("accuracy", "balanced_accuracy")

# Bound on the number of entries of one block of the (n_boot x G) draw-count matrix, so that
# memory stays in the tens of MB however many resamples or identities there are.
_BLOCK_ENTRIES = 1 << 21


# ----------------------------------------------------------------------------- point metrics


def _labels(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shapes {t.shape} and {p.shape}")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} items but y_pred has {len(p)}")
    return t, p


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of items whose predicted label equals the true one; nan for no items."""
    t, p = _labels(y_true, y_pred)
    if len(t) == 0:
        return float("nan")
    return float(np.mean(t == p))


def majority_baseline(train_labels: Any, y_true: Any) -> dict[str, Any]:
    """Scores of predicting the commonest training label (ties: the smallest) for every item."""
    train = np.asarray(train_labels)
    if train.ndim != 1 or len(train) == 0:
        raise ValueError("train_labels must be a non-empty 1-D sequence")
    values, counts = np.unique(train, return_counts=True)
    # np.unique sorts, and argmax returns the first maximum, hence the smallest tied label.
    label = values[int(np.argmax(counts))]
    t = np.asarray(y_true)
    pred = np.full(t.shape, label, dtype=np.result_type(t, train))
    return {
        "label": label.item(),
        "accuracy": accuracy(t, pred),
        "balanced_accuracy": balanced_accuracy(t, pred),
    }


# ----------------------------------------------------------------------------- result types


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _percentile_bounds(draws: np.ndarray, level: float) -> tuple[float, float]:
    _check_level(level)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass
class Interval:
    """A point estimate with its percentile bootstrap interval at confidence `level`."""

    estimate: float
    low: float
    high: float
    level: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{100 * self.estimate:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"


@dataclass
class PairedResult:
    """metric(a) - metric(b) on the full data, its bootstrap interval and two-sided p-value.

    `draws` keeps the bootstrap differences so that intervals at other levels (Holm's
    per-comparison levels) come from the same resamples as the p-value.
    """

    difference: float
    low: float
    high: float
    level: float
    p_value: float
    n_boot: int
    draws: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "p_value": self.p_value,
            "n_boot": self.n_boot,
        }

    def interval(self, level: float) -> tuple[float, float]:
        """Percentile bounds of the bootstrap differences at confidence `level`."""
        return _percentile_bounds(self.draws, level)


# ----------------------------------------------------------------------------- bootstrap core


@dataclass(frozen=True)
class _Counts:
    """Per-group, per-class counts from which every resample's metric follows."""

    totals: np.ndarray  # (G, K): items of true class k in group g
    correct: np.ndarray  # (S, G, K): correct ones, per prediction run (seed)

    @property
    def n_groups(self) -> int:
        return self.totals.shape[0]


def _as_runs(y_pred: Any, n_items: int) -> np.ndarray:
    """One row per seed. A flat sequence is a single run; a list of arrays (or a 2-D array) is
    several runs over the same items."""
    try:
        runs = np.asarray(y_pred)
    except ValueError as err:  # ragged list of runs
        raise ValueError("all prediction runs must have one label per item") from err
    if runs.ndim == 1:
        runs = runs[None, :]
    if runs.ndim != 2 or runs.shape[0] == 0:
        raise ValueError(f"predictions must be an array or a non-empty list of arrays, got shape {runs.shape}")
    if runs.shape[1] != n_items:
        raise ValueError(f"y_true has {n_items} items but predictions have {runs.shape[1]}")
    return runs


def _group_index(groups: Iterable[Hashable] | None, n_items: int) -> np.ndarray:
    if groups is None:
        return np.arange(n_items)
    # A dict rather than np.unique: keys may be any hashable (e.g. (dataset, person) tuples),
    # and numbering by first appearance makes one-item groups identical to groups=None.
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(key, len(index)) for key in groups), dtype=np.int64)
    if len(codes) != n_items:
        raise ValueError(f"y_true has {n_items} items but groups has {len(codes)}")
    return codes


def _counts(y_true: Any, runs: Sequence[np.ndarray], groups: Iterable[Hashable] | None) -> _Counts:
    t = np.asarray(y_true)
    if t.ndim != 1 or len(t) == 0:
        raise ValueError("y_true must be a non-empty 1-D sequence")
    classes, cls = np.unique(t, return_inverse=True)
    grp = _group_index(groups, len(t))
    n_groups, n_classes = int(grp.max()) + 1, len(classes)
    cell = grp * n_classes + cls
    size = n_groups * n_classes
    totals = np.bincount(cell, minlength=size).reshape(n_groups, n_classes).astype(np.float64)
    correct = np.stack(
        [np.bincount(cell, weights=(run == t), minlength=size).reshape(n_groups, n_classes) for run in runs]
    )
    return _Counts(totals=totals, correct=correct)


def _metric_from_counts(totals: np.ndarray, correct: np.ndarray, metric: str) -> np.ndarray:
    """Per-resample, per-run metric: totals (B, K), correct (B, S, K) -> (B, S)."""
    if metric == "accuracy":
        return correct.sum(-1) / totals.sum(-1)[:, None]
    present = totals > 0
    # A class missing from a resample has no recall; average over the classes that are there.
    recall = correct / np.where(present, totals, 1.0)[:, None, :]
    return (recall * present[:, None, :]).sum(-1) / present.sum(-1)[:, None]


def _weighted_metric(counts: _Counts, weights: np.ndarray, metric: str) -> np.ndarray:
    """Metric of each run on resamples given by group multiplicities `weights` (B, G) -> (B, S)."""
    n_runs, n_groups, n_classes = counts.correct.shape
    totals = weights @ counts.totals
    flat = counts.correct.transpose(1, 0, 2).reshape(n_groups, n_runs * n_classes)
    correct = (weights @ flat).reshape(len(weights), n_runs, n_classes)
    return _metric_from_counts(totals, correct, metric)


def _draw_weights(rng: np.random.Generator, n_rows: int, n_groups: int) -> np.ndarray:
    """Multinomial(G; 1/G, ..., 1/G) multiplicities, one resample per row.

    Counting uniform indices is the same distribution as rng.multinomial and several times
    faster for thousands of groups.
    """
    picks = rng.integers(0, n_groups, size=(n_rows, n_groups))
    offsets = np.arange(n_rows)[:, None] * n_groups
    flat = np.bincount((picks + offsets).ravel(), minlength=n_rows * n_groups)
    return flat.reshape(n_rows, n_groups).astype(np.float64)


def _bootstrap_metric(counts: _Counts, metric: str, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, S) per-run metric on n_boot cluster resamples."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // counts.n_groups)
    parts = []
    for start in range(0, n_boot, block):
        weights = _draw_weights(rng, min(block, n_boot - start), counts.n_groups)
        parts.append(_weighted_metric(counts, weights, metric))
    return np.concatenate(parts)


def _full_metric(counts: _Counts, metric: str) -> np.ndarray:
    """(S,) per-run metric on the observed data (every group once)."""
    return _weighted_metric(counts, np.ones((1, counts.n_groups)), metric)[0]


def _check_args(metric: str, n_boot: int, level: float) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    _check_level(level)


# ----------------------------------------------------------------------------- public bootstrap


def bootstrap_ci(y_true: Any, y_pred: Any, groups: Iterable[Hashable] | None = None, metric: str = "balanced_accuracy",
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile cluster-bootstrap interval of `metric`.

    `groups` holds one key per item (e.g. identity); None makes every item its own group.
    `y_pred` may be a list of per-seed predictions for the same items: the estimate and every
    resample's value are then means over seeds.
    """
    _check_args(metric, n_boot, level)
    t = np.asarray(y_true)
    runs = _as_runs(y_pred, len(t))
    counts = _counts(t, runs, groups)
    draws = _bootstrap_metric(counts, metric, n_boot, seed).mean(axis=1)
    low, high = _percentile_bounds(draws, level)
    return Interval(estimate=float(_full_metric(counts, metric).mean()), low=low, high=high, level=level)


def _two_sided_p(draws: np.ndarray) -> float:
    # The +1 counts the observed data as one more resample, so p is never exactly 0.
    n = len(draws)
    below = (np.count_nonzero(draws <= 0) + 1) / (n + 1)
    above = (np.count_nonzero(draws >= 0) + 1) / (n + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def paired_bootstrap(y_true: Any, preds_a: Any, preds_b: Any, groups: Iterable[Hashable] | None = None,
                     metric: str = "balanced_accuracy", n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0) -> PairedResult:
    """Bootstrap of metric(a) - metric(b), both scored on the same resample of groups.

    `preds_a` and `preds_b` are each one array or a list of per-seed arrays (the two sides may
    have different numbers of seeds); each side is averaged over its own seeds.
    """
    _check_args(metric, n_boot, level)
    t = np.asarray(y_true)
    runs_a, runs_b = _as_runs(preds_a, len(t)), _as_runs(preds_b, len(t))
    # One count table for both sides guarantees that they see identical resamples.
    counts = _counts(t, list(runs_a) + list(runs_b), groups)
    n_a = len(runs_a)

    def difference(per_run: np.ndarray) -> np.ndarray:
        return per_run[..., :n_a].mean(axis=-1) - per_run[..., n_a:].mean(axis=-1)

    draws = difference(_bootstrap_metric(counts, metric, n_boot, seed))
    low, high = _percentile_bounds(draws, level)
    return PairedResult(
        difference=float(difference(_full_metric(counts, metric))),
        low=low,
        high=high,
        level=level,
        p_value=_two_sided_p(draws),
        n_boot=n_boot,
        draws=draws,
    )


# ----------------------------------------------------------------------------- multiplicity


def holm(p_values: dict[str, float], alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Holm-Bonferroni step-down over the comparisons in `p_values`.

    Per key: the raw "p", the Holm-adjusted "p_adjusted" (monotone in rank, capped at 1),
    "reject", and "level" = 1 - alpha / (m - rank), the confidence level Holm tests that
    comparison at (rank 0-based in ascending p).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    for key, p in p_values.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-value of {key!r} must lie in [0, 1], got {p}")
    m = len(p_values)
    ordered = sorted(p_values, key=lambda key: p_values[key])  # stable: ties keep input order
    result: dict[str, dict[str, Any]] = {}
    running_max, still_rejecting = 0.0, True
    for rank, key in enumerate(ordered):
        p = float(p_values[key])
        running_max = max(running_max, min(1.0, (m - rank) * p))
        # Step-down: once one comparison is kept, every larger p is kept too.
        still_rejecting = still_rejecting and p <= alpha / (m - rank)
        result[key] = {
            "p": p,
            "p_adjusted": running_max,
            "reject": still_rejecting,
            "level": 1.0 - alpha / (m - rank),
        }
    return {key: result[key] for key in p_values}


def verdicts(paired: dict[str, PairedResult], alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Holm-corrected verdict of each arm against the baseline.

    Adds to `holm`'s fields the full-data "difference", the interval ("low", "high") at the
    arm's Holm level, and "verdict": "better" / "worse" when Holm rejects and the difference is
    positive / negative, "no significant difference" otherwise.
    """
    corrected = holm({arm: result.p_value for arm, result in paired.items()}, alpha)
    out: dict[str, dict[str, Any]] = {}
    for arm, result in paired.items():
        entry = dict(corrected[arm])
        low, high = result.interval(entry["level"])
        verdict = "no significant difference"
        if entry["reject"] and result.difference > 0:
            verdict = "better"
        elif entry["reject"] and result.difference < 0:
            verdict = "worse"
        out[arm] = {**entry, "difference": result.difference, "low": low, "high": high, "verdict": verdict}
    return out
