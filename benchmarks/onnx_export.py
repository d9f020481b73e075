"""onnxruntime against eager PyTorch, per model kind, at the shipped presets' sizes.

    python benchmarks/onnx_export.py [--threads 2] [--batch 16] [--seconds 5]

For each kind the network is built from its preset (weights at their initialisation: speed does
not depend on them), exported the way `facegan export` does, checked against PyTorch
(rtol 1e-3, atol 1e-4) and both are timed on the same batch, threads and inputs; the best of 3
rounds of `--seconds` / 3 each. Prints a Markdown table and the CPU (lscpu's model name).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attributes.config import AttributeRunConfig  # noqa: E402
from attributes.export import AttributesForExport, output_names, sample_faces  # noqa: E402
from attributes.model import AttributeEnsemble, build_attribute_model  # noqa: E402
from data_prep.datasets.celeba import CELEBA_ATTRIBUTES  # noqa: E402
from data_prep.datasets.schema import LabelSchema  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.device import cpu_model_name  # noqa: E402
from engine.onnx_export import ClampedImages, export_onnx  # noqa: E402
from engine.presets import resolve_preset  # noqa: E402
from gan.generators.config import GANConfig  # noqa: E402
from gan.generators.models.latent import sample_latent  # noqa: E402
from gan.generators.step import build_gan_step  # noqa: E402
from gan.sr.config import SRConfig  # noqa: E402
from gan.sr.export import sample_lr_faces  # noqa: E402
from gan.sr.models import build_sr_generator  # noqa: E402




def _section(preset: str, package: str, key: str) -> dict:
    import yaml

    return yaml.safe_load(resolve_preset(preset, package).read_text())[key]


def generator_case(preset: str, batch: int):
    from engine.config import from_dict

    config = from_dict(GANConfig, _section(preset, "gan.generators", "gan"))
    step = build_gan_step(config)
    latents = sample_latent(batch, config.latent_dim, config.latent_distribution, generator=torch.Generator().manual_seed(0))
    return f"{config.model} generator ({preset}, {config.image_size} px)", ClampedImages(step.generator), latents, ["images"], "latent"


def sr_case(preset: str, batch: int):
    from engine.config import from_dict

    config = from_dict(SRConfig, _section(preset, "gan.sr", "sr"))
    model = config.model
    inputs = sample_lr_faces(batch, model.output_size, model.scale)
    return (f"SR generator ({preset}, {model.input_size} -> {model.output_size} px)",
            ClampedImages(build_sr_generator(model)), inputs, ["sr_images"], "images")


def attribute_case(preset: str, batch: int, members: int = 1, sa: bool = False):
    overrides = ["model.head.sa_softmax=true"] if sa else []
    config = load_config(AttributeRunConfig, resolve_preset(preset, "attributes"), overrides)
    schemas = {"celeba": LabelSchema.binary(CELEBA_ATTRIBUTES)}
    networks = []
    for seed in range(members):
        torch.manual_seed(seed)
        networks.append(build_attribute_model(config.model, schemas))
    model = networks[0] if members == 1 else AttributeEnsemble(networks)
    label = (f"attributes ({preset}, {config.model.trunk.name} x{config.model.trunk.width:g}, 40 CelebA heads"
             f"{', SA-softmax' if sa else ''}{f', ensemble of {members}' if members > 1 else ''})")
    return label, AttributesForExport(model.eval()), sample_faces(batch, config.model.trunk.input_size), \
        output_names(model.groups), "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    parser.add_argument("--batch", type=int, default=16, help="images per timed call (default 16)")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per engine and kind (default 6)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = [
        lambda: generator_case("dcgan64-cpu", args.batch),
        lambda: generator_case("began64-fast", args.batch),
        lambda: sr_case("x4-16to64-cpu", args.batch),
        lambda: sr_case("x8-8to64-cpu", args.batch),
        lambda: attribute_case("celeba64-closeup-all", args.batch),
        lambda: attribute_case("celeba64-closeup-all", args.batch, sa=True),
        lambda: attribute_case("celeba64-closeup-all", args.batch, members=2),
    ]
    print(f"CPU: {cpu_model_name()}; torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"best of 3 rounds of {args.seconds / 3:.1f} s per engine")
    print()
    print("| model | largest abs. difference | largest rel. difference | PyTorch images/s | onnxruntime images/s | ratio |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for k, make in enumerate(cases):
            label, module, inputs, names, input_name = make()
            check = export_onnx(module, inputs, Path(folder) / f"{k}.onnx", names, {"kind": "benchmark"},
                                input_name=input_name, time_seconds=args.seconds)
            print(f"| {label} | {max(check.max_abs.values()):.2g} | {max(check.max_rel.values()):.2g} | "
                  f"{check.torch_images_per_s:.0f} | {check.onnx_images_per_s:.0f} | {check.speed_ratio:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
