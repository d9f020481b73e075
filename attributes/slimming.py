"""Network slimming (Liu et al., ICCV 2017) of the AlexNet-BN trunk, with seed 000's adaptive L1 rule.

Training (`SlimConfig`, an option of `attributes train`): L1 on the BatchNorm scales of the trunk,
lambda * sum |gamma|, added to the loss. A channel counts as sparse when |gamma| < tau * max |gamma|
(tau = 0.05, seed 000 eq. 5.2), the maximum taken over the whole trunk ("global", as network
slimming compares channels across layers) or within its layer ("per_layer", seed 000's own
rule); the sparsity P is the share of sparse channels (eq. 5.3). With `adaptive`, lambda starts
at `l1` and, every `adjust_every` steps (t of N checks), follows seed 000's algorithm 5.6:
    if P_t - P_{t-1} < (r - P_{t-1}) / (N - t + 1):  lambda += delta   (not on course for r)
    elif P_t > r:                                     lambda -= delta   (past it)
so that the requested share r of channels ends below the threshold without a hand-tuned lambda.
Without `adaptive`, lambda stays at `l1` (network slimming's fixed coefficient).

Pruning (`prune_model`): a global threshold across the trunk's BatchNorm layers, as network
slimming uses: the `ratio` of channels with the smallest |gamma| go, except that every layer
keeps at least `min_keep` of its channels. The channels are removed physically: each conv
unit's filters and BN entries, the next conv's input channels, and, after the last unit, the
input channels of every head's first conv. The result is an ordinary attribute model whose
trunk config lists its channels, so it saves and loads like any checkpoint.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.errors import FaceganError
from engine.modes import eval_mode

__all__ = ["SlimConfig", "AdaptiveL1", "slimmable_units", "bn_scales", "l1_of_scales", "sparsity", "prune_model",
           "count_parameters", "count_flops"]


@dataclass
class SlimConfig:
    target: float = 0.0  # share of trunk channels to make sparse (r); 0 switches slimming off
    adaptive: bool = True  # seed 000's adaptive lambda; False: network slimming's fixed lambda = l1
    l1: float = 0.0  # the fixed lambda, or the adaptive lambda's start
    delta: float = 2e-5  # the adaptive step of lambda
    adjust_every: int = 50  # steps between sparsity checks (the seed checks once per epoch)
    tau: float = 0.05  # a channel is sparse when |gamma| < tau * max |gamma|
    scope: str = "global"  # global (max over the trunk) | per_layer (max within each layer, seed 000's rule)


def slimmable_units(model) -> list[nn.Sequential]:
    """The trunk's conv units (conv -> BN -> ReLU) in order; only AlexNet-BN is slimmable."""
    from attributes.trunks import AlexNetBN, ConvUnit

    if not isinstance(model.trunk, AlexNetBN):
        raise FaceganError(f"slimming supports the alexnet_bn trunk, not {type(model.trunk).__name__}")
    return [m for m in model.trunk.features if isinstance(m, ConvUnit)]


def bn_scales(model) -> list[torch.Tensor]:
    return [unit[1].weight for unit in slimmable_units(model)]


def l1_of_scales(model) -> torch.Tensor:
    return sum(w.abs().sum() for w in bn_scales(model))


@torch.no_grad()
def sparsity(model, tau: float = 0.05, scope: str = "global") -> float:
    """Share of trunk channels with |gamma| < tau * max |gamma| (over the trunk, or per layer)."""
    scales = [w.detach().abs().float() for w in bn_scales(model)]
    if scope == "global":
        peak = max(float(s.max()) for s in scales)
        sparse = sum(int((s < tau * peak).sum()) for s in scales)
    elif scope == "per_layer":
        sparse = sum(int((s < tau * s.max()).sum()) for s in scales)
    else:
        raise ValueError(f"slim.scope must be 'global' or 'per_layer', not {scope!r}")
    return sparse / sum(s.numel() for s in scales)


class AdaptiveL1:
    """lambda and its adjustment (seed 000, algorithm 5.6); its state goes into the checkpoint."""

    def __init__(self, config: SlimConfig, max_steps: int):
        if not 0.0 < config.target < 1.0:
            raise ValueError(f"slim.target must be in (0, 1), got {config.target}")
        if config.adjust_every < 1:
            raise ValueError("slim.adjust_every must be at least 1")
        self.config = config
        self.checks = max(1, max_steps // config.adjust_every)  # N
        self.lam = float(config.l1)
        self.previous = 0.0  # P_{t-1}
        self.t = 0

    def observe(self, current: float) -> None:
        """One check (every `adjust_every` steps) with the current sparsity P_t."""
        self.t += 1
        cfg = self.config
        if cfg.adaptive:
            on_course = (cfg.target - self.previous) / max(1, self.checks - self.t + 1)
            if current - self.previous < on_course:
                self.lam += cfg.delta
            elif current > cfg.target:
                self.lam = max(0.0, self.lam - cfg.delta)
        self.previous = current

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "previous": self.previous, "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam, self.previous, self.t = float(state["lam"]), float(state["previous"]), int(state["t"])


# -- pruning -------------------------------------------------------------------------------------
@torch.no_grad()
def channels_to_keep(model, ratio: float, min_keep: float = 0.1) -> list[torch.Tensor]:
    """Per conv unit, the sorted indices of the channels that survive a global |gamma| threshold
    removing `ratio` of all trunk channels (each layer keeps at least `min_keep` of its own)."""
    if not 0.0 <= ratio < 1.0:
        raise FaceganError(f"the pruning ratio must be in [0, 1), got {ratio}")
    scales = [w.detach().abs().float() for w in bn_scales(model)]
    everything = torch.cat(scales)
    n_prune = int(round(ratio * everything.numel()))
    threshold = everything.sort().values[n_prune - 1] if n_prune > 0 else -1.0
    kept = []
    for s in scales:
        keep = torch.nonzero(s > threshold).flatten()
        floor = max(1, math.ceil(min_keep * s.numel()))
        if keep.numel() < floor:  # never empty a layer: keep its largest scales
            keep = s.topk(floor).indices.sort().values
        kept.append(keep)
    return kept


@torch.no_grad()
def prune_model(model, ratio: float, min_keep: float = 0.1):
    """A smaller copy of `model` without the trunk channels that a global |gamma| threshold removes.
    Returns (pruned model, channels per unit)."""
    from attributes.trunks import ConvUnit

    kept = channels_to_keep(model, ratio, min_keep)
    pruned = copy.deepcopy(model)
    units = slimmable_units(pruned)
    previous: torch.Tensor | None = None
    for unit, keep in zip(units, kept):
        conv, bn = unit[0], unit[1]
        weight = conv.weight[keep]
        if previous is not None:
            weight = weight[:, previous]
        new_conv = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding, bias=False)
        new_conv.weight.copy_(weight)
        new_bn = nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new_bn, name).copy_(getattr(bn, name)[keep])
        new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
        new_bn.train(bn.training)
        unit[0], unit[1] = new_conv, new_bn
        previous = keep
    assert isinstance(units[-1], ConvUnit)
    for head in pruned.heads.values():  # the heads read the last unit's channels
        conv = head.conv[0]
        new_conv = nn.Conv2d(len(previous), conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
        new_conv.weight.copy_(conv.weight[:, previous])
        head.conv[0] = new_conv
    channels = [len(k) for k in kept]
    pruned.trunk.out_channels = channels[-1]
    return pruned, channels


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(model, dataset: str) -> int:
    """FLOPs of one face through the trunk and `dataset`'s heads (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, model.input_size, model.input_size, device=next(model.parameters()).device)
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(x, [(dataset, 1)])
    return int(counter.get_total_flops())


# -- the command -----------------------------------------------------------------------------------
def _images_per_second(models: dict[str, nn.Module], dataset: str, input_size: int, batch: int = 64,
                       rounds: int = 5, repeats: int = 4) -> dict[str, float]:
    """CPU images/s of each model on one batch of random faces, timed in interleaved rounds (so
    a noisy machine slows all of them alike); the median round counts."""
    import time

    x = torch.randn(batch, 3, input_size, input_size)
    layout = [(dataset, batch)]
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(x, layout)  # warm-up
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                for _ in range(repeats):
                    model(x, layout)
                times[name].append((time.perf_counter() - start) / repeats)
    return {name: batch / sorted(t)[len(t) // 2] for name, t in times.items()}


def prune_checkpoint(checkpoint, out_dir, ratio: float = 0.5, min_keep: float = 0.1, finetune_steps: int = 500,
                     split: str = "test", threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Prune a slimmed checkpoint, fine-tune the smaller model, and measure both: parameters, FLOPs,
    CPU images/s (same run) and accuracy. Writes OUT/pruned.pt, OUT/finetune/, OUT/prune.json, OUT/prune.md."""
    import json
    from dataclasses import replace
    from pathlib import Path

    from attributes.evaluation import evaluate_checkpoint, headline_accuracy
    from attributes.train import load_attribute_model, train
    from engine.checkpoint import atomic_save, atomic_write_text, load_checkpoint
    from engine.config import to_dict
    from engine.fold import optimize_for_inference

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(checkpoint)
    loaded = load_attribute_model(checkpoint)
    original = loaded.model
    slim_settings = to_dict(loaded.config.slim)  # as trained, before the fine-tuning config below replaces it
    before_sparsity = {scope: sparsity(original, loaded.config.slim.tau, scope) for scope in ("global", "per_layer")}
    pruned, channels = prune_model(original, ratio, min_keep)
    run_config = dict(state["run_config"])
    model_config = to_dict(replace(loaded.config.model, trunk=replace(loaded.config.model.trunk, channels=channels,
                                                                     checkpoint="")))
    run_config["model"] = model_config
    pruned_path = out / "pruned.pt"
    atomic_save({"run_config": run_config, "modules": {"model": pruned.state_dict()}, "ema": {},
                 "global_step": int(state.get("global_step", 0)),
                 "step_state": {"thresholds": dict((state.get("step_state") or {}).get("thresholds", {}))}}, pruned_path)

    config = loaded.config
    config.model = replace(config.model, trunk=replace(config.model.trunk, channels=channels, checkpoint=""))
    config.init_weights = str(pruned_path)
    config.slim = SlimConfig()  # no more L1 while fine-tuning
    config.optim = replace(config.optim, warmup_steps=min(config.optim.warmup_steps, max(1, finetune_steps // 10)),
                           schedule_steps=0)
    config.trainer = replace(config.trainer, out_dir=str(out / "finetune"), max_steps=finetune_steps, resume=False,
                             max_seconds=0.0, eval_every=max(1, finetune_steps // 2),
                             checkpoint_every=max(1, finetune_steps // 2), progress=progress,
                             threads=threads or config.trainer.threads)
    finetuned_path = Path(pruned_path)
    if finetune_steps > 0:
        result = train(config, progress=progress)
        finetuned_path = Path(result["checkpoint"])
    work = Path(checkpoint).resolve().parent.parent
    accuracy = {}
    for name, path in (("original", checkpoint), ("pruned", pruned_path), ("finetuned", finetuned_path)):
        if name == "finetuned" and finetune_steps == 0:
            continue
        evaluated = evaluate_checkpoint(path, out / f"eval-{name}", split=split, work_dir=work, use_ema=name != "pruned")
        accuracy[name] = headline_accuracy(evaluated)
    final = load_attribute_model(finetuned_path, use_ema=finetune_steps > 0).model
    dataset = next(iter(original.groups))
    speed = _images_per_second({"original": original.eval(), "pruned": final.eval(),
                                "original_folded": optimize_for_inference(original),
                                "pruned_folded": optimize_for_inference(final)}, dataset, original.input_size)
    report = {
        "checkpoint": str(checkpoint), "ratio": ratio, "min_keep": min_keep, "split": split,
        "slim": slim_settings, "sparsity_before_pruning": before_sparsity,
        "channels": {"original": [int(w.numel()) for w in bn_scales(original)], "pruned": channels},
        "parameters": {"original": count_parameters(original), "pruned": count_parameters(final),
                       "original_trunk": count_parameters(original.trunk), "pruned_trunk": count_parameters(final.trunk)},
        "flops": {"original": count_flops(original, dataset), "pruned": count_flops(final, dataset)},
        "images_per_second": speed, "speedup": speed["pruned"] / speed["original"],
        "speedup_folded": speed["pruned_folded"] / speed["original_folded"],
        "accuracy": accuracy, "finetune_steps": finetune_steps, "finetuned_checkpoint": str(finetuned_path),
        "threads": torch.get_num_threads(),
    }
    atomic_write_text(out / "prune.json", json.dumps(report, indent=2))
    atomic_write_text(out / "prune.md", _prune_report(report))
    return report


def _prune_report(r: dict) -> str:
    acc_rows = []
    for label in r["accuracy"].get("original", {}):
        values = [r["accuracy"].get(k, {}).get(label) for k in ("original", "pruned", "finetuned")]
        acc_rows.append(f"| {label} | " + " | ".join("–" if v is None else f"{100 * v:.2f}%" for v in values) + " |")
    p, f, s = r["parameters"], r["flops"], r["images_per_second"]
    return "\n".join([
        f"# Pruning {r['checkpoint']}", "",
        f"- global |gamma| threshold removing {100 * r['ratio']:.0f}% of the trunk's channels (each layer keeps at least "
        f"{100 * r['min_keep']:.0f}%); channels {r['channels']['original']} -> {r['channels']['pruned']}",
        f"- sparsity before pruning (|gamma| < tau * max): global {100 * r['sparsity_before_pruning']['global']:.1f}%, "
        f"per layer {100 * r['sparsity_before_pruning']['per_layer']:.1f}% (slim settings: {r['slim']})",
        f"- fine-tuned {r['finetune_steps']} steps; accuracy on the {r['split']} split", "",
        "| | original | pruned | pruned, then fine-tuned |", "|---|---|---|---|", *acc_rows, "",
        "| | original | pruned | ratio |", "|---|---|---|---|",
        f"| parameters | {p['original']:,} | {p['pruned']:,} | {p['pruned'] / p['original']:.2f} |",
        f"| trunk parameters | {p['original_trunk']:,} | {p['pruned_trunk']:,} | {p['pruned_trunk'] / p['original_trunk']:.2f} |",
        f"| FLOPs per face | {f['original']:,} | {f['pruned']:,} | {f['pruned'] / f['original']:.2f} |",
        f"| CPU images/s, eager ({r['threads']} threads) | {s['original']:.0f} | {s['pruned']:.0f} | {r['speedup']:.2f}x |",
        f"| CPU images/s, BN folded + channels_last | {s['original_folded']:.0f} | {s['pruned_folded']:.0f} | "
        f"{r['speedup_folded']:.2f}x |", "",
    ])


def register_cli(sub) -> None:
    from pathlib import Path

    p = sub.add_parser(
        "prune",
        help="remove the trunk channels with the smallest BN scales, fine-tune, and measure size, speed and accuracy",
        description="Network slimming, second half. Train first with L1 on the trunk's BatchNorm scales "
        "(`attributes train --slim RATIO`: the adaptive coefficient of seed 000 reaches that share of sparse "
        "channels by itself; --set slim.adaptive=false slim.l1=X for a fixed coefficient). This command then "
        "removes the RATIO of trunk channels with the smallest |gamma| under one global threshold, rebuilds a smaller "
        "model that loads as an ordinary checkpoint (OUT/pruned.pt), fine-tunes it (OUT/finetune/), and reports "
        "parameters, FLOPs, CPU images/s (measured side by side in this run) and accuracy before and after "
        "(OUT/prune.md, OUT/prune.json). Only the alexnet_bn trunk can be pruned.",
    )
    p.add_argument("checkpoint", type=Path, help="a checkpoint of `attributes train` (ideally trained with --slim)")
    p.add_argument("--out", type=Path, required=True, help="folder for pruned.pt, finetune/, prune.md and prune.json")
    p.add_argument("--ratio", type=float, default=0.5, help="share of the trunk's channels to remove (default 0.5)")
    p.add_argument("--min-keep", type=float, default=0.1, help="share of each layer's channels always kept (default 0.1)")
    p.add_argument("--finetune-steps", type=int, default=500, help="fine-tuning steps after pruning (default 500; 0: none)")
    p.add_argument("--split", default="test", choices=("val", "test"), help="split for the accuracies (default test)")
    p.add_argument("--threads", type=int, help="torch CPU threads for fine-tuning and timing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while fine-tuning")
    p.set_defaults(func=_run_prune)


def _run_prune(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    report = prune_checkpoint(args.checkpoint, args.out, args.ratio, args.min_keep, args.finetune_steps, args.split,
                              args.threads, not args.no_progress)
    print(f"channels {report['channels']['original']} -> {report['channels']['pruned']}; parameters "
          f"{report['parameters']['pruned'] / report['parameters']['original']:.2f}x, FLOPs "
          f"{report['flops']['pruned'] / report['flops']['original']:.2f}x, CPU speed {report['speedup']:.2f}x")
    for stage, values in report["accuracy"].items():
        print(f"{stage}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in values.items()))
    print(f"report: {args.out / 'prune.md'}")
    return 0
