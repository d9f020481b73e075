"""`facegan attributes verify`: face verification of an identity model on people held out from
training, with the pairs, folds and ROC of `attributes/verification.py`."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from attributes.evaluation import _open_split
from attributes.train import load_attribute_model, single_network
from attributes.verification import (embed_faces, make_pairs, pair_scores, read_pairs, roc_curve, verification_folds,
                                     write_pairs)
from data_prep.cache import IDENTITY_TASK
from engine.checkpoint import atomic_write_text
from engine.errors import FaceganError

__all__ = ["verify_checkpoint", "register_cli"]

log = logging.getLogger(__name__)


def verify_checkpoint(checkpoint: str | Path, out_dir: str | Path, on: str | None = None, head: str | None = None,
                      split: str = "test", n_pairs: int = 1000, folds: int = 10, seed: int = 0,
                      pairs_file: str | Path | None = None, device: str = "cpu", batch_size: int = 256,
                      use_ema: bool = True, work_dir: str | Path | None = None) -> dict:
    """Verify the people of `split` of dataset `on` with the identity head of dataset `head`;
    writes OUT/pairs.txt, OUT/results.json, OUT/report.md and OUT/roc.png."""
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
    cache = _open_split(loaded.config.datasets[on], model.input_size, split, work)
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


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="face verification accuracy of an identity model on unseen people (LFW protocol, ROC)",
        description="Verify pairs of faces of people held out from training, with the embedding of a model trained "
        "with `attributes train --identity`. Same- and different-person pairs are drawn deterministically in "
        "person-disjoint folds and saved as OUT/pairs.txt in LFW's format; each fold is scored with the threshold "
        "that is best on the other folds. Writes OUT/results.json, OUT/report.md and OUT/roc.png.",
    )
    p.add_argument("checkpoint", type=Path, help="a checkpoint of `facegan attributes train --identity`")
    p.add_argument("--out", type=Path, required=True, help="folder for pairs.txt, results.json, report.md and roc.png")
    p.add_argument("--on", help="which of the model's datasets to draw people from (default: the first with an identity head)")
    p.add_argument("--head", help="whose identity head embeds the faces (default: that dataset's own, else the first)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="the people to verify (default test)")
    p.add_argument("--pairs", type=int, default=1000, help="same-person pairs, and as many different-person pairs (default 1000)")
    p.add_argument("--folds", type=int, default=10, help="person-disjoint folds (default 10, as LFW)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment and the pair draw")
    p.add_argument("--pairs-file", type=Path, help="use the pairs of this pairs.txt instead of drawing new ones")
    p.add_argument("--work-dir", type=Path, help="where aligned caches go (default: the run folder)")
    p.add_argument("--batch-size", type=int, default=256, help="faces per forward pass (default 256)")
    p.add_argument("--device", default="cpu", help="device (default cpu)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of their EMA copy")
    p.set_defaults(func=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    result = verify_checkpoint(args.checkpoint, args.out, args.on, args.head, args.split, args.pairs, args.folds,
                               args.seed, args.pairs_file, args.device, args.batch_size, not args.raw, args.work_dir)
    print(f"{result['dataset']}/{result['split']}: {result['pairs']['same']} + {result['pairs']['different']} pairs of "
          f"{result['people']} people; accuracy {100 * result['accuracy_mean']:.2f} ± {100 * result['accuracy_sd']:.2f}% "
          f"over {result['pairs']['folds']} folds, AUC {result['auc']:.4f}")
    print(f"report: {args.out / 'report.md'}")
    return 0
