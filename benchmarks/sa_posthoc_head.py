"""Can an "unrecognizable" output fitted after training rank errors better than max-softmax?

    python benchmarks/sa_posthoc_head.py runs/sa27/plain/checkpoints/latest.pt [--dataset utkface]

A candidate SA-softmax recipe that costs no top-1: keep a converged plain-softmax model's class
logits z and fit one more logit z_u = w.h + b on its fc_feature embedding h (flip-averaged, as
`attributes eval` predicts), by the thesis's tag rule applied to held-out faces: the target is
"unrecognizable" where the plain model's top-1 is wrong, else the true class, cross-entropy over
the N+1 softmax (classes fixed, so only w and b move; convex), L2 on w chosen by 5-fold
cross-validation (AURC) over the validation faces. "+msp" also gives z_u the plain model's
-log max-softmax as an input, so that the family contains max-softmax's own ranking.

Printed per task, on the test faces: the plain model's top-1 (which the recipe keeps) and the
AURC of its max-softmax, of the energy score (logsumexp z, what the fitted output falls back to
with w = 0), and of 1 - p(unrecognizable) of each fit, with the difference from max-softmax and a
95% bootstrap interval over files (people where the dataset names them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attributes.data import open_split  # noqa: E402
from attributes.inference import load_attribute_model, to_model_input  # noqa: E402
from attributes.metrics import aurc, paired_bootstrap  # noqa: E402
from data_prep.datasets.schema import TaskKind  # noqa: E402
from engine.device import configure_threads, cpu_model_name  # noqa: E402

PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


@torch.no_grad()
def embeddings_and_logits(model, entry, dataset: str, split: str, work: Path):
    cache = open_split(entry, model.input_size, split, work)
    head = model.head_module(dataset)
    hs, outs = [], {}
    for start in range(0, len(cache), 256):
        x = to_model_input(cache.get_batch(np.arange(start, min(len(cache), start + 256))))
        h_mean, o_mean = 0.0, {}
        for images in (x, x.flip(-1)):  # the flip test-time augmentation of `attributes eval`
            out, h = head(model.trunk(images), return_embedding=True)
            h_mean = h_mean + h / 2
            for name, value in out.items():
                o_mean[name] = o_mean.get(name, 0.0) + value / 2
        hs.append(h_mean)
        for name, value in o_mean.items():
            outs.setdefault(name, []).append(value)
    return cache, torch.cat(hs), {name: torch.cat(v) for name, v in outs.items()}


def class_logits(group, out: torch.Tensor, k: int) -> torch.Tensor:
    if group.kind is TaskKind.BINARY:  # one logit per attribute: the 2-class logits are (0, z)
        z = out[:, k:k + 1]
        return torch.cat([torch.zeros_like(z), z], 1)
    return out


def inputs(z: torch.Tensor, h: torch.Tensor, with_msp: bool) -> torch.Tensor:
    parts = [h] + ([-torch.log_softmax(z, 1).max(1).values.unsqueeze(1)] if with_msp else [])
    return torch.cat(parts, 1)


def fit(z, h, y, penalty: float, with_msp: bool):
    """w, b of the extra logit on standardised inputs; returns a function (z, h) -> z_u."""
    wrong = z.argmax(1) != y
    target = torch.where(wrong, torch.full_like(y, z.shape[1]), y)
    x = inputs(z, h, with_msp)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    xs = (x - mean) / scale
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = torch.cat([z, (xs @ w + b).unsqueeze(1)], 1)
        loss = F.cross_entropy(logits, target) + penalty * (w ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    w, b = w.detach(), b.detach()
    return lambda z2, h2: ((inputs(z2, h2, with_msp) - mean) / scale) @ w + b


def confidence(z: torch.Tensor, z_u: torch.Tensor) -> np.ndarray:
    return (1 - torch.softmax(torch.cat([z, z_u.unsqueeze(1)], 1), 1)[:, -1]).numpy()


def chosen_penalty(z, h, y, with_msp: bool) -> float:
    folds = np.random.default_rng(0).integers(0, 5, len(y))
    scores = {}
    for penalty in PENALTIES:
        values = []
        for f in range(5):
            train, held = torch.from_numpy(folds != f), torch.from_numpy(folds == f)
            extra = fit(z[train], h[train], y[train], penalty, with_msp)
            values.append(aurc(confidence(z[held], extra(z[held], h[held])), (z[held].argmax(1) == y[held]).numpy()))
        scores[penalty] = float(np.mean(values))
    return min(scores, key=scores.get)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a plain-softmax checkpoint of `facegan attributes train`")
    parser.add_argument("--dataset", default=None, help="which trained dataset (default: the first)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws (default 1000)")
    args = parser.parse_args()
    configure_threads(args.threads)
    loaded = load_attribute_model(args.checkpoint, use_ema=True)
    model = loaded.model.eval()
    dataset = args.dataset or next(iter(loaded.config.datasets))
    entry = loaded.config.datasets[dataset]
    work = args.checkpoint.resolve().parent.parent
    val, h_val, out_val = embeddings_and_logits(model, entry, dataset, "val", work)
    test, h_test, out_test = embeddings_and_logits(model, entry, dataset, "test", work)
    units = np.asarray([str(r.identity) if r.identity is not None else str(r.path) for r in test.records])
    print(f"CPU: {cpu_model_name()}; {args.checkpoint} (step {loaded.step}); {dataset}: {len(val)} validation faces "
          f"to fit on, {len(test)} test faces\n")
    print("| task | test top-1 | AURC max-softmax | AURC energy | fit: penalty, AURC, minus max-softmax [95%] | "
          "fit +msp: penalty, AURC, minus max-softmax [95%] |")
    print("|---|---|---|---|---|---|")
    for group in model.groups[dataset]:
        if group.kind is TaskKind.REGRESSION:
            continue
        for k, task in enumerate(group.tasks):
            column = val.schema.names.index(task.name)
            known_val, known_test = val.mask[:, column], test.mask[:, column]
            y_val, y_test = val.targets[known_val, column].long(), test.targets[known_test, column].long()
            z_val = class_logits(group, out_val[group.name], k)[known_val]
            z_test = class_logits(group, out_test[group.name], k)[known_test]
            correct = (z_test.argmax(1) == y_test).numpy()
            msp = torch.softmax(z_test, 1).max(1).values.numpy()
            cells = [task.name, f"{100 * correct.mean():.2f}%", f"{aurc(msp, correct):.4f}",
                     f"{aurc(torch.logsumexp(z_test, 1).numpy(), correct):.4f}"]
            for with_msp in (False, True):
                penalty = chosen_penalty(z_val, h_val[known_val], y_val, with_msp)
                extra = fit(z_val, h_val[known_val], y_val, penalty, with_msp)
                conf = confidence(z_test, extra(z_test, h_test[known_test]))
                d = paired_bootstrap(lambda i, c=conf: aurc(c[i], correct[i]) - aurc(msp[i], correct[i]),
                                     units[known_test.numpy()], args.bootstrap)
                cells.append(f"{penalty:g}, {aurc(conf, correct):.4f}, {d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
