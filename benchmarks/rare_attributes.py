"""Rare CelebA attributes under different losses (issue 8's F-measure comparison), from the
results.json of `facegan attributes eval` of each run on the same test split.

The attributes compared are the 10 rarest (lowest test positive rate) among those with at least
20 positives in the test split; the first run's test counts pick them (every run is evaluated on
the same faces, which the script checks). For each run it prints mean F1 and mean balanced
accuracy over those attributes at threshold 0.5 (and with the validation-calibrated thresholds
when the results have them), and the ratio to the first run, the reference (plain BCE).

    facegan attributes train --config celeba64-t30 --out runs/attributes/t30-bce
    facegan attributes train --config celeba64-t30 --out runs/attributes/t30-posw --pos-weight
    facegan attributes train --config celeba64-t30 --out runs/attributes/t30-floss --f-measure 1
    facegan attributes eval runs/attributes/t30-<name>/checkpoints/best.pt --out runs/attributes/t30-<name>/eval
    .venv/bin/python benchmarks/rare_attributes.py bce=runs/attributes/t30-bce/eval/results.json \\
        pos_weight=runs/attributes/t30-posw/eval/results.json floss=runs/attributes/t30-floss/eval/results.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _per_attribute(results: dict, dataset: str | None, kind: str) -> tuple[str, dict, int]:
    datasets = results["datasets"]
    name = dataset or next(iter(datasets))
    section = datasets[name]
    return name, section["binary"][kind]["per_attribute"], section["faces"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=RESULTS_JSON", help="the reference (plain BCE) first")
    parser.add_argument("--dataset", help="which evaluated dataset (default: the first)")
    parser.add_argument("--count", type=int, default=10, help="how many of the rarest attributes (default 10)")
    parser.add_argument("--min-positives", type=int, default=20, help="positives an attribute needs in the test split")
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        name, _, path = item.partition("=")
        runs[name] = json.loads(Path(path).read_text())
    reference = next(iter(runs.values()))
    _, per, faces = _per_attribute(reference, args.dataset, "threshold_0.5")
    eligible = [a for a, e in per.items() if (e.get("positives") or 0) >= args.min_positives]
    chosen = sorted(eligible, key=lambda a: per[a]["positive_rate"])[:args.count]
    print(f"{len(chosen)} rarest attributes with >= {args.min_positives} positives among {faces} test faces:")
    print("  " + ", ".join(f"{a} ({per[a]['positives']}, {100 * per[a]['positive_rate']:.1f}%)" for a in chosen))
    rows = {}
    for kind in ("threshold_0.5", "calibrated"):
        print(f"\n{kind}:")
        print(f"{'run':<14} {'mean F1':>8} {'ratio':>6} {'mean bal. acc':>14} {'ratio':>6}")
        base = None
        for name, results in runs.items():
            try:
                _, values, n = _per_attribute(results, args.dataset, kind)
            except KeyError:
                print(f"{name:<14} (no {kind} results)")
                continue
            if n != faces:
                raise SystemExit(f"{name} was evaluated on {n} faces, the reference on {faces}: not the same test split")
            f1 = sum(values[a]["f1"] for a in chosen) / len(chosen)
            bal = sum(values[a]["balanced_accuracy"] for a in chosen) / len(chosen)
            base = base or (f1, bal)
            rows.setdefault(kind, {})[name] = (f1, bal)
            print(f"{name:<14} {f1:8.4f} {f1 / base[0]:6.2f} {bal:14.4f} {bal / base[1]:6.2f}")
    print("\nper attribute F1 at 0.5: " + " | ".join(runs))
    for a in chosen:
        print(f"  {a:<22} " + "  ".join(f"{_per_attribute(r, args.dataset, 'threshold_0.5')[1][a]['f1']:.3f}" for r in runs.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
