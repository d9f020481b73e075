"""The reference DCGAN baseline: PyTorch examples' `dcgan/main.py`, on facegan's training faces.

What it is: a standalone re-implementation of the most widely used public DCGAN code,
github.com/pytorch/examples `dcgan/main.py` (Soumith Chintala et al.), kept as close to that
script as a time-budgeted run allows, so that facegan's DCGAN can be compared with it under the
same wall-clock budget on the same data. It uses nothing of facegan's training code (no Trainer,
no EMA, no DCGANStep); only the data path is shared.

Faithful to upstream:
- Generator (nz=100, ngf=64): ConvTranspose 4x4/1 from z (B, nz, 1, 1) to 512x4x4, then 4x4/2
  transposed convolutions to 256x8, 128x16, 64x32, 3x64, BatchNorm + ReLU after every one but
  the last, Tanh at the output; no biases.
- Discriminator (ndf=64): 4x4/2 convolutions 3 -> 64 -> 128 -> 256 -> 512 with LeakyReLU(0.2),
  BatchNorm from the second one on, then a 4x4/1 convolution to one value and a Sigmoid; no biases.
- `weights_init`: every Conv* weight ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02), bias 0.
- `nn.BCELoss` on the sigmoid output, real label 1, fake label 0; noise z ~ N(0, 1).
- Adam, lr 2e-4, betas (0.5, 0.999), for both networks.
- The update order: D.zero_grad; D on the real batch, backward; G(z); D on fake.detach(),
  backward; D step; G.zero_grad; D(fake) against real labels, backward; G step (same fakes).
- Batch 64 (upstream's `--batchSize` default; the PyTorch DCGAN *tutorial* uses 128, available
  with --batch-size 128), a shuffling DataLoader that keeps the last partial batch.
- Samples as upstream draws them: the generator stays in train mode (upstream never calls
  .eval()), so BatchNorm normalises each sampling batch with its own statistics. `--bn running`
  uses the running averages instead (eval mode).

Differs from upstream (on purpose, so that only the model and its training differ from
facegan's run):
- Data: upstream reads a folder of JPEGs through ImageFolder (Resize(64), CenterCrop(64),
  ToTensor, Normalize(0.5, 0.5)). Here the faces are exactly those `facegan gan train --data
  celeba` trains on: `gan.generators.data.build_gan_dataset` (the CelebA train split, MTCNN-aligned with the
  thesis template at 64 px, read from the same uint8 cache, random horizontal flips as in
  facegan's run), mapped to [-1, 1] as x / 127.5 - 1 (what ToTensor + Normalize compute).
  Upstream has no flips; `--no-flip` removes them.
- DataLoader workers default to 0 (upstream: 2): the cache needs no decoding, and a worker
  process would steal the budget's cores.
- Stopping: a wall-clock budget (`--minutes`, checked after every step as facegan's Trainer
  checks train.max_seconds; the clock starts when the loop starts) and/or `--max-steps`,
  instead of a number of epochs. Sample grids are written at the end, not every 100 steps.
- Outputs: OUT/netG.pth and OUT/netD.pth (state dicts), OUT/samples.png (64 faces from fixed
  noise), OUT/real_samples.png, OUT/run.json (steps, seconds, images seen, settings, last losses).

    # train for 20 minutes on 2 threads, reusing facegan's aligned cache
    python benchmarks/dcgan_reference.py --root ../shared/data/celeba --out runs/celeba_dcgan_ref \\
        --minutes 20 --threads 2 --cache-dir runs/celeba_dcgan/cache
    # 420 faces as PNG files for evaluation
    python benchmarks/dcgan_reference.py --out runs/celeba_dcgan_ref --sample 420 --sample-dir runs/celeba_dcgan_ref/faces
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from torch import nn, optim

from engine.checkpoint import atomic_save, atomic_write_text
from engine.device import configure_threads
from engine.errors import FaceganError
from engine.logging import save_image_grid

__all__ = ["Generator", "Discriminator", "weights_init", "train", "load_generator", "sample", "write_pngs", "main"]

log = logging.getLogger("dcgan_reference")

NC = 3  # image channels, as upstream


class Generator(nn.Module):
    """Upstream's `Generator`: z (B, nz, 1, 1) or (B, nz) -> (B, 3, 64, 64) in (-1, 1)."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = NC):
        super().__init__()
        self.nz = nz
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 2:
            z = z[:, :, None, None]
        return self.main(z)


class Discriminator(nn.Module):
    """Upstream's `Discriminator`: (B, 3, 64, 64) -> (B,) probabilities of "real"."""

    def __init__(self, ndf: int = 64, nc: int = NC):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def weights_init(m: nn.Module) -> None:
    """Upstream's initialisation, matched on the class name exactly as upstream does."""
    classname = type(m).__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _faces(args: argparse.Namespace, out: Path):
    """facegan's training faces, built exactly as `facegan gan train` builds them."""
    from gan.generators.config import GANDataConfig
    from gan.generators.data import build_gan_dataset

    data = GANDataConfig(source=args.data, root=args.root, split=args.split, template=args.template,
                         cache_dir=args.cache_dir or "", flip=args.flip)
    return build_gan_dataset(data, 64, out, progress=False), data


def train(args: argparse.Namespace) -> dict:
    """Upstream's training loop under a step and/or wall-clock budget; returns run.json's content."""
    if not args.minutes and not args.max_steps:
        raise FaceganError("give --minutes and/or --max-steps: without either the run would never stop")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = configure_threads(args.threads)
    torch.manual_seed(args.seed)
    dataset, data = _faces(args, out)
    if len(dataset) < 2:
        raise FaceganError(f"need at least 2 training faces, got {len(dataset)}")
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)

    net_g = Generator(args.nz, args.ngf)
    net_g.apply(weights_init)
    net_d = Discriminator(args.ndf)
    net_d.apply(weights_init)
    criterion = nn.BCELoss()
    fixed_noise = torch.randn(64, args.nz, 1, 1)
    real_label, fake_label = 1.0, 0.0
    optimizer_d = optim.Adam(net_d.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    optimizer_g = optim.Adam(net_g.parameters(), lr=args.lr, betas=(args.beta1, 0.999))

    budget = args.minutes * 60.0 if args.minutes else 0.0
    max_steps = args.max_steps or float("inf")
    step, epoch, seen, status = 0, 0, 0, "max_steps"
    last: dict[str, float] = {}
    log.info("training on %d faces (%s, split %s), batch %d, %d thread(s)", len(dataset), data.source, data.split,
             args.batch_size, threads)
    started = time.perf_counter()
    while status == "max_steps" and step < max_steps:
        for batch in loader:
            real = batch["image"].float().div_(127.5).sub_(1.0)
            b = real.size(0)
            # (1) D: maximise log D(x) + log(1 - D(G(z)))
            net_d.zero_grad()
            label = torch.full((b,), real_label)
            output = net_d(real)
            err_d_real = criterion(output, label)
            err_d_real.backward()
            d_x = output.mean().item()
            noise = torch.randn(b, args.nz, 1, 1)
            fake = net_g(noise)
            label.fill_(fake_label)
            output = net_d(fake.detach())
            err_d_fake = criterion(output, label)
            err_d_fake.backward()
            d_g_z1 = output.mean().item()
            err_d = err_d_real + err_d_fake
            optimizer_d.step()
            # (2) G: maximise log D(G(z)), on the same fakes, through the updated D
            net_g.zero_grad()
            label.fill_(real_label)
            output = net_d(fake)
            err_g = criterion(output, label)
            err_g.backward()
            d_g_z2 = output.mean().item()
            optimizer_g.step()

            step += 1
            seen += b
            last = {"loss_d": err_d.item(), "loss_g": err_g.item(), "d_x": d_x, "d_g_z1": d_g_z1, "d_g_z2": d_g_z2}
            if args.log_every and step % args.log_every == 0:
                log.info("[%d][%d] Loss_D: %.4f Loss_G: %.4f D(x): %.4f D(G(z)): %.4f / %.4f  (%.1f s)", epoch, step,
                         last["loss_d"], last["loss_g"], d_x, d_g_z1, d_g_z2, time.perf_counter() - started)
            if budget and time.perf_counter() - started >= budget:
                status = "time_budget"
                break
            if step >= max_steps:
                break
        else:
            epoch += 1
    seconds = time.perf_counter() - started

    atomic_save(net_g.state_dict(), out / "netG.pth")
    atomic_save(net_d.state_dict(), out / "netD.pth")
    with torch.no_grad():  # train mode, as upstream's fake_samples grids
        save_image_grid(net_g(fixed_noise), out / "samples.png")
    save_image_grid(real[:64], out / "real_samples.png")
    result = {
        "implementation": "pytorch/examples dcgan/main.py, re-implemented in benchmarks/dcgan_reference.py",
        "status": status,
        "steps": step,
        "seconds": seconds,
        "seconds_per_step": seconds / max(step, 1),
        "images_seen": seen,
        "epochs": seen / len(dataset),
        "train_faces": len(dataset),
        "batch_size": args.batch_size,
        "threads": threads,
        "seed": args.seed,
        "hyper": {"nz": args.nz, "ngf": args.ngf, "ndf": args.ndf, "lr": args.lr, "beta1": args.beta1},
        "data": {"source": data.source, "root": data.root, "split": data.split, "template": data.template,
                 "flip": data.flip, "cache_dir": data.cache_dir or str(out / "cache")},
        "last": last,
    }
    atomic_write_text(out / "run.json", json.dumps(result, indent=2))
    return result


def load_generator(out: str | Path) -> Generator:
    """The generator saved by `train` in `out` (its nz/ngf read from run.json)."""
    out = Path(out)
    weights, info = out / "netG.pth", out / "run.json"
    if not weights.is_file() or not info.is_file():
        raise FaceganError(f"{out} holds no finished reference run (netG.pth and run.json are written at its end)")
    hyper = json.loads(info.read_text())["hyper"]
    net_g = Generator(hyper["nz"], hyper["ngf"])
    net_g.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net_g


@torch.no_grad()
def sample(net_g: Generator, n: int, seed: int = 0, batch_size: int = 64, bn: str = "batch") -> torch.Tensor:
    """`n` images in [-1, 1]. bn="batch": train-mode BatchNorm on batches of `batch_size`, the way
    upstream draws its samples; bn="running": eval mode, the running statistics."""
    if bn not in ("batch", "running"):
        raise ValueError(f"bn must be 'batch' or 'running', got {bn!r}")
    if n < 1:
        raise FaceganError(f"the number of samples must be at least 1, got {n}")
    rng = torch.Generator().manual_seed(seed)
    was_training = net_g.training
    net_g.train(bn == "batch")
    try:
        chunks = [net_g(torch.randn(min(batch_size, n - start), net_g.nz, 1, 1, generator=rng))
                  for start in range(0, n, batch_size)]
    finally:
        net_g.train(was_training)
    return torch.cat(chunks).clamp(-1.0, 1.0)


def write_pngs(images: torch.Tensor, folder: str | Path) -> Path:
    """One lossless PNG per image (uint8 rounded as gan.metrics.to_uint8), plus grid.png of the first 64."""
    from PIL import Image

    from gan.metrics.batch import to_uint8

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(to_uint8(images).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(array).save(folder / f"{i:05d}.png")
    save_image_grid(images[:64], folder.parent / f"{folder.name}_grid.png")
    return folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder: weights, grids and run.json")
    p.add_argument("--data", default="celeba", help="data source as for `facegan gan train --data` (default celeba)")
    p.add_argument("--root", default="../shared/data/celeba", help="dataset root (default ../shared/data/celeba)")
    p.add_argument("--split", default="train", help="training split (default train, as facegan's data.split)")
    p.add_argument("--template", default="thesis", help="aligner template (default thesis, as facegan's data.template)")
    p.add_argument("--cache-dir", default="", help="aligned-face cache; point it at facegan's run's (OUT/cache) to "
                   "reuse the identical faces without aligning again (default OUT/cache)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flips as facegan's data.flip (default on; upstream has none)")
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock training budget in minutes (0: none)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: none)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (upstream --batchSize default 64)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default FACEGAN_THREADS, else every core)")
    p.add_argument("--seed", type=int, default=0, help="torch seed of weights, noise, shuffling and flips (default 0)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0; upstream 2)")
    p.add_argument("--nz", type=int, default=100, help="latent size (upstream 100)")
    p.add_argument("--ngf", type=int, default=64, help="generator width (upstream 64)")
    p.add_argument("--ndf", type=int, default=64, help="discriminator width (upstream 64)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (upstream 2e-4)")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (upstream 0.5)")
    p.add_argument("--log-every", type=int, default=50, help="log the losses every this many steps (0: never)")
    p.add_argument("--sample", type=int, default=0, metavar="N",
                   help="do not train: draw N faces from OUT's generator into --sample-dir")
    p.add_argument("--sample-dir", help="folder for the --sample PNGs (default OUT/samples)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the --sample noise (default 0)")
    p.add_argument("--bn", choices=("batch", "running"), default="batch",
                   help="BatchNorm statistics when sampling: batch (train mode, as upstream) or running (eval mode)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.sample:
            configure_threads(args.threads)
            images = sample(load_generator(args.out), args.sample, args.sample_seed, args.batch_size, args.bn)
            folder = write_pngs(images, args.sample_dir or Path(args.out) / "samples")
            print(f"wrote {len(images)} faces to {folder}")
            return 0
        result = train(args)
    except FaceganError as exc:
        print(f"dcgan_reference: error: {exc}", file=sys.stderr)
        return 2
    print(f"{result['status']}: {result['steps']} steps ({result['epochs']:.2f} epochs of {result['train_faces']} faces) "
          f"in {result['seconds']:.0f} s, {result['seconds_per_step']:.3f} s/step; wrote {args.out}/netG.pth, "
          f"samples.png and run.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
