"""Attribute-model speed, as ratios measured in the same run.

1. Training: dataset-parallel steps (one batch from each of K datasets, one concatenated trunk
   pass) against training on one dataset alone, in images/s; and, for the same K batches, one
   concatenated forward+backward against K separate forward passes through the trunk followed
   by one backward (what a naive multi-dataset loop does); and one dataset's training step with
   the default NHWC (channels_last) weights against the same model in the plain NCHW layout.
2. Inference: eager eval-mode model (plain NCHW) against the BN-folded + channels_last copy from
   engine.fold.optimize_for_inference (and, with --compile, torch.compile on top), in images/s,
   with the largest output difference as a check that the fast path computes the same thing.

The models are the ones `facegan attributes train` builds (AlexNet-BN trunk, CelebA-style 40
binary heads + UTKFace-style age/gender/race heads + LFW-style gender); inputs are random,
since speed does not depend on pixel values. Run it on an idle machine:

    .venv/bin/python benchmarks/attributes_throughput.py --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from attributes.heads import HeadConfig
from attributes.model import ModelConfig, build_attribute_model
from attributes.multidataset import combine_losses
from attributes.heads import group_loss
from attributes.trunks import TrunkConfig
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from engine.device import autocast_dtype
from engine.fold import optimize_for_inference

SCHEMAS = {
    "celeba": LabelSchema.binary([f"attr{i}" for i in range(40)]),
    "utkface": LabelSchema((Task("Age", TaskKind.REGRESSION, value_range=(0.0, 116.0)), Task("Male", TaskKind.BINARY),
                            Task("Race", TaskKind.CATEGORICAL, classes=("w", "b", "a", "i", "o")))),
    "lfw": LabelSchema((Task("Male", TaskKind.BINARY),)),
}


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _batch(name: str, schema: LabelSchema, b: int, size: int, gen: torch.Generator):
    images = torch.randn(b, 3, size, size, generator=gen)
    targets = torch.zeros(b, len(schema))
    for k, task in enumerate(schema):
        if task.kind is TaskKind.REGRESSION:
            targets[:, k] = torch.randint(1, 90, (b,), generator=gen).float()
        else:
            targets[:, k] = torch.randint(0, task.num_classes, (b,), generator=gen).float()
    return images, targets, torch.ones(b, len(schema), dtype=torch.bool)


def _loss(model, outputs, batches, names):
    losses = {}
    for name in names:
        _, targets, mask = batches[name]
        for group in model.groups[name]:
            loss = group_loss(group, outputs[name][group.name], targets[:, group.columns], mask[:, group.columns])
            if loss is not None:
                losses[f"{name}/{group.name}"] = loss
    return combine_losses(losses, model.loss_terms, {}, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=64, help="faces per dataset per step")
    parser.add_argument("--size", type=int, default=64, help="input size")
    parser.add_argument("--width", type=float, default=0.25, help="AlexNet-BN width")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions (median reported)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the folded model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    config = ModelConfig(TrunkConfig("alexnet_bn", args.size, args.width), HeadConfig())
    model = build_attribute_model(config, SCHEMAS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # The reference: the same weights in the plain NCHW layout.
    plain = build_attribute_model(ModelConfig(config.trunk, config.head, channels_last=False), SCHEMAS)
    plain.load_state_dict(model.state_dict())
    plain_optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-4)
    names = list(SCHEMAS)
    batches = {n: _batch(n, s, args.batch, args.size, gen) for n, s in SCHEMAS.items()}
    model.train()

    def parallel_step():
        images = torch.cat([batches[n][0] for n in names])
        outputs, _ = model(images, [(n, args.batch) for n in names])
        optimizer.zero_grad(set_to_none=True)
        _loss(model, outputs, batches, names).backward()
        optimizer.step()

    def separate_step():
        outputs = {}
        for n in names:
            outputs.update(model(batches[n][0], [(n, args.batch)])[0])
        optimizer.zero_grad(set_to_none=True)
        _loss(model, outputs, batches, names).backward()
        optimizer.step()

    def single_step(net=model, opt=optimizer, dtype=None):
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            outputs, _ = net(batches["celeba"][0], [("celeba", args.batch)])
        opt.zero_grad(set_to_none=True)
        _loss(net, {n: {g: v.float() for g, v in o.items()} for n, o in outputs.items()}, batches, ["celeba"]).backward()
        opt.step()

    plain.train()
    t_parallel = _timed(parallel_step, args.repeats)
    t_separate = _timed(separate_step, args.repeats)
    t_single = _timed(single_step, args.repeats)
    t_plain = _timed(lambda: single_step(plain, plain_optimizer), args.repeats)
    dtype = autocast_dtype(torch.device("cpu"))
    t_bf16 = _timed(lambda: single_step(dtype=dtype), args.repeats) if dtype is not None else None
    k = len(names)
    print(f"threads={args.threads} batch={args.batch}/dataset size={args.size} AlexNet-BN width={args.width}")
    print("training")
    print(f"  dataset-parallel ({k} datasets, one trunk pass): {k * args.batch / t_parallel:8.1f} img/s  ({t_parallel * 1e3:.0f} ms/step)")
    print(f"  {k} separate trunk passes, same batches:          {k * args.batch / t_separate:8.1f} img/s  ({t_separate * 1e3:.0f} ms/step)")
    print(f"  one dataset alone (celeba):                     {args.batch / t_single:8.1f} img/s  ({t_single * 1e3:.0f} ms/step)")
    print(f"  ratio concatenated / separate (img/s):          {t_separate / t_parallel:8.3f}")
    print(f"  ratio dataset-parallel / single (img/s):        {(k * args.batch / t_parallel) / (args.batch / t_single):8.3f}")
    print(f"  one dataset, plain NCHW weights:                {args.batch / t_plain:8.1f} img/s  ({t_plain * 1e3:.0f} ms/step)")
    print(f"  ratio channels_last / NCHW (img/s):             {t_plain / t_single:8.3f}")
    if t_bf16 is None:
        print("  bfloat16 autocast: skipped (this CPU has no native bfloat16, where it runs slower than float32)")
    else:
        print(f"  one dataset, bfloat16 autocast (--amp):         {args.batch / t_bf16:8.1f} img/s  ({t_bf16 * 1e3:.0f} ms/step)")
        print(f"  ratio bfloat16 / float32 (img/s):               {t_single / t_bf16:8.3f}")

    plain.load_state_dict(model.state_dict())  # both trained on above: compare the inference paths on one set of weights
    model.eval()
    plain.eval()
    images = torch.randn(256, 3, args.size, args.size, generator=gen)
    layout = [("celeba", 256)]
    fast = optimize_for_inference(model)
    with torch.inference_mode():
        eager_out = plain(images, layout)[0]["celeba"]["binary"]
        fast_out = fast(images, layout)[0]["celeba"]["binary"]
        t_eager = _timed(lambda: plain(images, layout), args.repeats)
        t_fast = _timed(lambda: fast(images, layout), args.repeats)
    print("inference (256 faces, celeba head)")
    print(f"  eager (NCHW):                   {256 / t_eager:8.1f} img/s")
    print(f"  BN folded + channels_last:      {256 / t_fast:8.1f} img/s  (max |diff| {float((eager_out - fast_out).abs().max()):.2e})")
    print(f"  ratio fast / eager:             {t_eager / t_fast:8.3f}")
    if args.compile:
        compiled = optimize_for_inference(plain, compile=True)
        with torch.inference_mode():
            t_compiled = _timed(lambda: compiled(images, layout), args.repeats)
        print(f"  + torch.compile:                {256 / t_compiled:8.1f} img/s  ratio {t_eager / t_compiled:.3f}")


if __name__ == "__main__":
    main()
