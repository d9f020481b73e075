"""`facegan attributes train | eval | predict`."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from engine.config import load_config, save_config
from engine.errors import FaceganError

__all__ = ["register"]

log = logging.getLogger(__name__)

PRESETS_DIR = Path("configs/attributes")


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "attributes",
        help="multi-dataset face-attribute models with SA-softmax confidence grades",
        description="Face attributes: `train` learns one shared trunk with a head per dataset from several datasets at "
        "once (CelebA, LFW, UTKFace, MORPH, Adience, ChaLearn, a folder+CSV, or the built-in synthetic faces); `eval` "
        "reports accuracy, balanced accuracy, age MAE/CS(5), confusion matrices and SA-softmax grades with "
        "risk-coverage curves; `predict` aligns raw photos and writes each task's prediction and grade as JSON.",
    )
    sub = group.add_subparsers(dest="attributes_command", metavar="ATTRIBUTES_COMMAND", required=True)

    p = sub.add_parser(
        "train",
        help="train an attribute model on one or more datasets",
        description="Train an attribute model. Settings come from the dataclass defaults, then --config, then the "
        "shortcut options, then --set KEY=VALUE overrides (e.g. --set model.head.sa_softmax=true). Every step draws "
        "one batch of trainer.batch_size faces from EACH dataset; an epoch is one pass over the largest dataset "
        "(smaller ones cycle). Writes OUT/config.yaml, OUT/checkpoints/{latest,best}.pt, OUT/metrics.jsonl, "
        "OUT/curves.png and TensorBoard logs in OUT/tensorboard/.",
    )
    p.add_argument("--config", type=Path, help=f"YAML preset (see {PRESETS_DIR}: celeba64.yaml, joint64.yaml, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting by its dotted path (repeatable), e.g. trainer.max_steps=500")
    p.add_argument("--dataset", dest="datasets", action="append", default=[], metavar="NAME[=ROOT]",
                   help="add a training dataset (repeatable): a data_prep name and its folder, e.g. "
                   "celeba=/data/celeba; 'synthetic' needs no folder")
    p.add_argument("--out", help="run folder (trainer.out_dir; default runs/attributes)")
    p.add_argument("--trunk", help="alexnet_bn, resnet10, resnet18, resnet34 or resnet50 (model.trunk.name; ResNet widths and stem: model.trunk.resnet_width, model.trunk.resnet_stem_stride)")
    p.add_argument("--init-from", metavar="CKPT",
                   help="start the trunk from this checkpoint's trunk: a facegan run (an identity model trained with "
                   "--identity, say; EMA weights when present), a trunk state_dict or torchvision ResNet weights "
                   "(model.trunk.checkpoint); the heads start fresh")
    p.add_argument("--input-size", type=int, choices=(64, 128, 224), help="face size in pixels (model.trunk.input_size)")
    p.add_argument("--sa-softmax", action="store_true", help="SA-softmax heads with dynamic tags (model.head.sa_softmax)")
    p.add_argument("--identity", action="store_true",
                   help="also learn each dataset's face identity: a categorical task 'Identity' with one class per person "
                   "of its training split (datasets.NAME.identity); evaluate it with `attributes verify`")
    p.add_argument("--pos-weight", action="store_true",
                   help="class-balanced BCE: positives of a binary attribute weighted (1-p)/p (model.head.pos_weight)")
    p.add_argument("--balanced-sampling", action="store_true",
                   help="draw faces with replacement, weighted by the inverse frequency of their label values, so rare "
                   "attributes and small classes come up more often (sampler.balance=inverse_frequency; sampler.power)")
    p.add_argument("--f-measure", type=float, metavar="WEIGHT",
                   help="add the relaxed F-measure loss (beta^2 = loss.f_measure_beta2, default 0.3) to the BCE of binary "
                   "attributes, with this weight (loss.f_measure); not on SA-softmax heads")
    p.add_argument("--f-measure-variant", choices=("floss", "logfloss"),
                   help="1 - F (floss, default) or -log F (logfloss) (loss.f_measure_variant)")
    p.add_argument("--center-loss", type=float, metavar="WEIGHT",
                   help="add the center loss on the head embeddings of SINGLE-LABEL heads only (identity and categorical "
                   "tasks), with this weight (loss.center); the centres move at their own rate loss.center_alpha")
    p.add_argument("--contrastive-center-loss", type=float, metavar="WEIGHT",
                   help="add the contrastive-center loss (delta = loss.contrastive_delta, default 1) on single-label heads "
                   "only (identity and categorical tasks), with this weight (loss.contrastive_center)")
    p.add_argument("--exclusive", type=float, metavar="WEIGHT",
                   help="add exclusive regularisation of the classifier weights of single-label heads only (identity and "
                   "categorical tasks), with this weight (loss.exclusive)")
    p.add_argument("--slim", type=float, metavar="RATIO",
                   help="L1 on the trunk's BatchNorm scales whose coefficient adapts itself (seed 000) until this share "
                   "of channels is sparse, ready for `attributes prune` (slim.target; alexnet_bn trunk only)")
    p.add_argument("--teacher", metavar="CKPT",
                   help="also learn from this trained model's outputs on every head (knowledge distillation, "
                   "distill.teacher; distill.temperature, distill.weight); `attributes distill` adds the baseline")
    p.add_argument("--steps", type=int, help="optimiser steps (trainer.max_steps)")
    p.add_argument("--minutes", type=float, help="wall-clock budget; stops, evaluates and saves when spent (trainer.max_seconds)")
    p.add_argument("--batch-size", type=int, help="faces per dataset per step (trainer.batch_size)")
    p.add_argument("--seed", type=int, help="seed of weights, data order and augmentation (trainer.seed)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (trainer.device)")
    p.add_argument("--threads", type=int, help="torch CPU threads (trainer.threads)")
    p.add_argument("--amp", action="store_true", help="mixed precision (trainer.amp): float16 on CUDA; bfloat16 on a CPU with native bfloat16 (AVX512-BF16 or AMX), about 1.8x faster there; float32 elsewhere")
    p.add_argument("--members", type=int, metavar="K",
                   help="train K copies (seeds SEED..SEED+K-1, each in OUT/members/k, each on the full step budget) and "
                        "average their outputs into one model in OUT/checkpoints (members)")
    p.add_argument("--resume", action="store_true", help="continue OUT's latest checkpoint exactly where it stopped")
    p.add_argument("--force", action="store_true", help="with --resume: allow a changed configuration")
    p.set_defaults(func=_run_train)

    from attributes.distill_cli import register_cli as register_distill
    from attributes.evaluation import register_cli as register_eval
    from attributes.explain import register_cli as register_explain
    from attributes.predict import register_cli as register_predict
    from attributes.prune_cli import register_cli as register_prune
    from attributes.verify_cli import register_cli as register_verify

    register_eval(sub)
    register_predict(sub)
    register_verify(sub)
    register_explain(sub)
    register_prune(sub)
    register_distill(sub)


def build_config(args: argparse.Namespace):
    from attributes.config import AttributeRunConfig, DatasetEntry

    shortcuts = {
        "trainer.out_dir": args.out, "model.trunk.name": args.trunk, "model.trunk.input_size": args.input_size,
        "model.head.sa_softmax": True if args.sa_softmax else None, "trainer.max_steps": args.steps,
        "trainer.max_seconds": args.minutes * 60 if args.minutes else None, "trainer.batch_size": args.batch_size,
        "trainer.seed": args.seed, "trainer.device": args.device, "trainer.threads": args.threads,
        "trainer.amp": True if args.amp else None, "trainer.resume": True if args.resume else None,
        "trainer.force_resume": True if args.force else None,
        "model.head.pos_weight": True if args.pos_weight else None, "model.trunk.checkpoint": args.init_from,
        "sampler.balance": "inverse_frequency" if args.balanced_sampling else None,
        "loss.f_measure": args.f_measure, "loss.f_measure_variant": args.f_measure_variant,
        "loss.center": args.center_loss, "loss.contrastive_center": args.contrastive_center_loss,
        "loss.exclusive": args.exclusive, "slim.target": args.slim, "distill.teacher": args.teacher,
        "members": args.members,
    }
    overrides = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    dataset_overrides = [o for o in args.overrides if o.startswith("datasets.")]
    config = load_config(AttributeRunConfig, args.config, overrides + [o for o in args.overrides if o not in dataset_overrides])
    for item in args.datasets:
        name, _, root = item.partition("=")
        name = name.strip()
        if not name:
            raise FaceganError(f"--dataset {item!r}: expected NAME or NAME=ROOT")
        entry = config.datasets.get(name) or DatasetEntry(source=name)
        if root:
            entry.root = root
        config.datasets[name] = entry
    if args.identity:
        if not config.datasets:
            config.datasets["synthetic"] = DatasetEntry()
        for entry in config.datasets.values():
            entry.identity = True
    if dataset_overrides:
        from engine.config import apply_overrides, from_dict, to_dict

        config = from_dict(AttributeRunConfig, apply_overrides(to_dict(config), dataset_overrides))
    return config


def _run_train(args: argparse.Namespace) -> int:
    from attributes.train import train

    config = build_config(args)
    out = Path(config.trainer.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    result = train(config)
    if "members" in result:
        return _report_ensemble(result)
    print(f"{result['status']} at step {result['global_step']} in {result['seconds']:.0f} s; checkpoint {result['checkpoint']}")
    print("faces per split: " + json.dumps(result["datasets"]))
    metrics_file = out / "metrics.jsonl"
    if metrics_file.is_file():
        evals = [json.loads(line) for line in metrics_file.read_text().splitlines() if '"split": "eval"' in line]
        if evals:
            last = {k: v for k, v in evals[-1].items() if k not in ("split",)}
            print("validation: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
        else:
            print("validation: none (no validation faces); checkpoints/latest.pt is the model")
    return 130 if result["status"] == "interrupted" else 0


def _report_ensemble(result: dict) -> int:
    for k, member in enumerate(result["members"]):
        print(f"member {k}: {member['status']} at step {member['global_step']} in {member['seconds']:.0f} s; "
              f"checkpoint {member['checkpoint']}")
    if result["status"] == "interrupted":
        print("stopped before every member finished: no ensemble checkpoint was written; --resume continues")
        return 130
    print(f"ensemble of {len(result['members'])} members in {result['seconds']:.0f} s; checkpoint {result['checkpoint']}")
    print("faces per split: " + json.dumps(result["datasets"]))
    for kind, validation in result["validation"].items():
        if validation:
            print(f"validation ({kind}.pt): " + ", ".join(f"{k}={v:.4f}" for k, v in validation.items()))
        else:
            print(f"validation: none (no validation faces); checkpoints/{kind}.pt is the model")
    return 0
