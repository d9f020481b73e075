"""What a training step spends besides forward and backward, per-tensor loops against batched
(`foreach`) kernels, on the judged CelebA preset's model (VGG-BN 0.5 at 80 px with its 40 heads:
38 weight tensors, 2.2 M weights).

Each row times, in the same run and on the same tensors, the loop one would write by hand
(torch's own default on a CPU for the optimizer) and the batched form the trainer uses:
- the AdamW step (`attributes.step`: `foreach=True`; torch picks foreach by itself on GPUs only),
- the EMA update (`engine.ema.ModelEMA.update`: one `_foreach_lerp_`),
- the gradient norm the trainer logs when it does not clip (`torch.nn.utils.get_total_norm`).
Both forms do the same arithmetic: the script checks that their results are bitwise equal.
A second table times the Adam steps of the GAN and SR presets' networks the same way
(`gan.generators.step`, `gan.sr.step`: `foreach=True` too).

    .venv/bin/python benchmarks/step_bookkeeping.py --threads 2
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attributes.model import ModelConfig, build_attribute_model  # noqa: E402
from attributes.trunks import TrunkConfig  # noqa: E402
from data_prep.datasets.celeba import CELEBA_ATTRIBUTES  # noqa: E402
from data_prep.datasets.schema import LabelSchema  # noqa: E402
from engine.device import cpu_model_name  # noqa: E402
from engine.ema import ModelEMA  # noqa: E402


def milliseconds(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=300, help="calls timed per row (default 300)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    schema = LabelSchema.binary(CELEBA_ATTRIBUTES)
    config = ModelConfig(trunk=TrunkConfig(name="vgg_bn", input_size=80, width=0.5))
    model = build_attribute_model(config, {"celeba": schema}, {"celeba": list(CELEBA_ATTRIBUTES)}).train()
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    print(f"CPU: {cpu_model_name()}; {args.threads} torch threads; {len(params)} tensors, "
          f"{sum(p.numel() for p in params) / 1e6:.1f} M weights")

    _, _, adam_loop_ms, adam_batched_ms, adam_same = optimizer_pair(
        "AdamW", {"model": model}, torch.optim.AdamW, {"lr": 2e-3, "weight_decay": 5e-4}, args.repeats)
    rows = [("AdamW step", adam_loop_ms, adam_batched_ms, adam_same)]

    loop_ema, batched_ema = ModelEMA(model, 0.998), ModelEMA(model, 0.998)

    def ema_loop():  # ModelEMA.update as a per-tensor loop, buffers copied as there
        targets = dict(loop_ema.module.named_parameters())
        for name, p in model.named_parameters():
            targets[name].lerp_(p.detach(), 1.0 - loop_ema.decay_at(10**6))
        buffers = dict(loop_ema.module.named_buffers())
        for name, buffer in model.named_buffers():
            buffers[name].copy_(buffer)

    rows.append(("EMA update", milliseconds(ema_loop, args.repeats),
                 milliseconds(lambda: batched_ema.update(model, 10**6), args.repeats),
                 all(torch.equal(a, b) for a, b in zip(loop_ema.module.parameters(), batched_ema.module.parameters()))))

    def norm_loop():
        return torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))

    def norm_batched():
        return torch.nn.utils.get_total_norm([p.grad for p in params])

    rows.append(("gradient norm", milliseconds(norm_loop, args.repeats), milliseconds(norm_batched, args.repeats),
                 bool(torch.equal(norm_loop(), norm_batched()))))

    print("| per step | loop ms | batched ms | loop / batched | same result |")
    print("|---|---|---|---|---|")
    for name, loop_ms, batched_ms, same in rows:
        print(f"| {name} | {loop_ms:.2f} | {batched_ms:.2f} | {loop_ms / batched_ms:.2f}x | {'yes' if same else 'NO'} |")
    saved = sum(loop_ms - batched_ms for _, loop_ms, batched_ms, _ in rows)
    print(f"saved per step: {saved:.2f} ms")
    print()
    gan_rows(args.repeats)


def optimizer_pair(name: str, networks: dict[str, torch.nn.Module], optimizer: type, settings: dict, repeats: int):
    """One row: the optimizer steps of every network of a model family (random gradients, the same
    for both forms), per-tensor loop against foreach; (name, tensors, loop ms, batched ms, same)."""
    loop_ms = batched_ms = 0.0
    same, tensors = True, 0
    for network in networks.values():
        params = list(network.parameters())
        tensors += len(params)
        loop_net, batched_net = copy.deepcopy(network), copy.deepcopy(network)
        for source in params:
            source.grad = torch.randn_like(source)
        for net in (loop_net, batched_net):
            for p, source in zip(net.parameters(), params):
                p.grad = source.grad.clone()
        loop = optimizer(loop_net.parameters(), **settings, foreach=False)
        batched = optimizer(batched_net.parameters(), **settings, foreach=True)
        loop_ms += milliseconds(loop.step, repeats)
        batched_ms += milliseconds(batched.step, repeats)
        same &= all(torch.equal(a, b) for a, b in zip(loop_net.parameters(), batched_net.parameters()))
    return name, tensors, loop_ms, batched_ms, same


def gan_rows(repeats: int) -> None:
    from engine.config import load_config
    from engine.presets import resolve_preset
    from gan.generators.config import GANRunConfig
    from gan.generators.models import build_gan
    from gan.sr.config import SRRunConfig
    from gan.sr.models import build_sr_critic, build_sr_generator

    rows = []
    for preset in ("dcgan64-cpu", "began64-fast"):
        gan = load_config(GANRunConfig, resolve_preset(preset, "gan.generators")).gan.resolved()
        generator, discriminator = build_gan(gan)
        rows.append(optimizer_pair(f"{preset}: generator + discriminator", {"g": generator, "d": discriminator},
                                   torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)}, repeats))
    sr = load_config(SRRunConfig, resolve_preset("x4-16to64-cpu", "gan.sr")).sr
    rows.append(optimizer_pair("x4-16to64-cpu: generator + critic (adversarial phase)",
                               {"g": build_sr_generator(sr.model), "c": build_sr_critic(sr.model)}, torch.optim.Adam,
                               {"lr": 1e-4, "betas": (0.9, 0.999)}, repeats))
    print("| Adam steps per training step | tensors | loop ms | batched ms | loop / batched | same result |")
    print("|---|---|---|---|---|---|")
    for name, tensors, loop_ms, batched_ms, same in rows:
        print(f"| {name} | {tensors} | {loop_ms:.2f} | {batched_ms:.2f} | {loop_ms / batched_ms:.2f}x | "
              f"{'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
