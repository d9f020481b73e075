"""`facegan attributes train | eval | predict | verify | explain | prune | distill`: parse the
arguments and call one library function each (attributes.train, .evaluate, .predict,
.verification, .explain, .prune, .distill)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.options import add_command, add_runtime_options, add_training_flags, run_config_from_args

__all__ = ["register"]

PRESETS = "attributes"


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(
        subparsers, "attributes", "multi-dataset face-attribute models with SA-softmax confidence grades",
        """Face attributes: `train` learns one shared trunk with a head per dataset from several
        datasets at once (CelebA, LFW, UTKFace, MORPH, Adience, ChaLearn, a folder+CSV, or the built-in
        synthetic faces); `eval` reports accuracy, balanced accuracy, age MAE/CS(5), confusion matrices and
        SA-softmax grades with risk-coverage curves; `predict` aligns raw photos and writes each task's
        prediction and grade as JSON; `verify`, `explain`, `prune` and `distill` test identity models, draw
        Grad-CAM maps, slim and distil; `trunk-weights` saves a trunk for other runs to start from.""")
    sub = group.add_subparsers(dest="attributes_command", metavar="ATTRIBUTES_COMMAND", required=True)

    p = add_command(sub, "train", "train an attribute model on one or more datasets",
        """Train an attribute model. Settings come from the dataclass defaults, then --config, then the
        options below, then --set KEY=VALUE overrides (e.g. --set model.head.sa_softmax=true). Every step draws
        one batch of trainer.batch_size faces from EACH dataset; an epoch is one pass over the largest dataset
        (smaller ones cycle). Writes OUT/config.yaml, OUT/checkpoints/{latest,best}.pt, OUT/metrics.jsonl,
        OUT/curves.png and TensorBoard logs in OUT/tensorboard/.""")
    add_training_flags(p, PRESETS, default_out="runs/attributes", help={
        "batch_size": "faces per dataset per step (trainer.batch_size)",
        "seed": "seed of weights, data order and augmentation (trainer.seed)",
        "minutes": "wall-clock budget; stops, evaluates and saves when spent (trainer.max_seconds); with --set "
                   "optim.schedule_follows_clock=true the learning rate's cosine ends with it rather than at --steps"})
    p.add_argument("--dataset", dest="datasets", action="append", default=[], metavar="NAME[=ROOT]",
                   help="""add a training dataset (repeatable): a data_prep name and its folder, e.g.
                       celeba=/data/celeba; 'synthetic' needs no folder""")
    p.add_argument("--trunk", help="alexnet_bn, vgg_bn, resnet10, resnet18, resnet34 or resnet50 (model.trunk.name; "
                                   "width: model.trunk.width; ResNet widths and stem: model.trunk.resnet_width, "
                                   "model.trunk.resnet_stem_stride)")
    p.add_argument("--init-from", metavar="CKPT",
                   help="""start the trunk from this checkpoint's trunk: a facegan run (an identity model trained
                       with --identity, say; EMA weights when present), a trunk state_dict, torchvision ResNet
                       weights, or the name of trunk weights that ship with facegan (vgg_bn-0.5-utkface-lfw: VGG-BN
                       0.5 trained on UTKFace and LFW-a) (model.trunk.checkpoint); the heads start fresh""")
    p.add_argument("--input-size", type=_input_size, metavar="PX",
                   help="face size in pixels, at least 32; each size aligns its own cache (model.trunk.input_size; "
                        "the CelebA presets use 64 and 80)")
    p.add_argument("--sa-softmax", action="store_true",
                   help="SA-softmax heads: an 'unrecognizable' output per task (model.head.sa_softmax), "
                   "learned from the thesis's dynamic tags, or with --set sa.method=gamblers from the gamblers' loss "
                   "(Liu et al. 2019)")
    p.add_argument("--identity", action="store_true",
                   help="""also learn each dataset's face identity: a categorical task 'Identity' with one class per
                       person of its training split (datasets.NAME.identity); evaluate it with `attributes verify`""")
    p.add_argument("--pos-weight", action="store_true",
                   help="class-balanced BCE: positives of a binary attribute weighted (1-p)/p (model.head.pos_weight)")
    p.add_argument("--balanced-sampling", action="store_true",
                   help="""draw faces with replacement, weighted by the inverse frequency of their label values, so
                       rare attributes and small classes come up more often (sampler.balance=inverse_frequency;
                       sampler.power)""")
    p.add_argument("--f-measure", type=float, metavar="WEIGHT",
                   help="""add the relaxed F-measure loss (beta^2 = loss.f_measure_beta2, default 0.3) to the BCE of
                       binary attributes, with this weight (loss.f_measure); not on SA-softmax heads""")
    p.add_argument("--f-measure-variant", choices=("floss", "logfloss"),
                   help="1 - F (floss, default) or -log F (logfloss) (loss.f_measure_variant)")
    p.add_argument("--center-loss", type=float, metavar="WEIGHT",
                   help="""add the center loss on the head embeddings of SINGLE-LABEL heads only (identity and
                       categorical tasks), with this weight (loss.center); the centres move at their own rate
                       loss.center_alpha""")
    p.add_argument("--contrastive-center-loss", type=float, metavar="WEIGHT",
                   help="""add the contrastive-center loss (delta = loss.contrastive_delta, default 1) on
                       single-label heads only (identity and categorical tasks), with this weight
                       (loss.contrastive_center)""")
    p.add_argument("--exclusive", type=float, metavar="WEIGHT",
                   help="""add exclusive regularisation of the classifier weights of single-label heads only
                       (identity and categorical tasks), with this weight (loss.exclusive)""")
    p.add_argument("--slim", type=float, metavar="RATIO",
                   help="""L1 on the trunk's BatchNorm scales whose coefficient adapts itself (Liu et al. 2017, with
                       a feedback rule) until this share of channels is sparse, ready for `attributes prune`
                       (slim.target; alexnet_bn trunk only)""")
    p.add_argument("--teacher", metavar="CKPT",
                   help="""also learn from this trained model's outputs on every head (knowledge distillation,
                       distill.teacher; distill.temperature, distill.weight); `attributes distill` adds the baseline""")
    p.add_argument("--members", type=int, metavar="K",
                   help="""train K copies (seeds SEED..SEED+K-1, each in OUT/members/k, each on the full step
                       budget) and average their outputs into one model in OUT/checkpoints (members)""")
    p.set_defaults(func=_run_train)

    p = add_command(
        sub, "eval", "accuracy, balanced accuracy, age MAE/CS(5), grades and risk-coverage of a trained model",
        """Evaluate an attribute checkpoint on held-out faces and write OUT/report.md, OUT/results.json
        and PNG plots (per-attribute accuracy, confusion matrices, risk-coverage curves). By default every
        dataset the model was trained on is read and split exactly as in training and its test split is used.
        Selective prediction compares SA-softmax confidence (SA heads) with the max-softmax confidence of the
        same model and, with --compare, with a separately trained plain-softmax model; the report says which has
        the lower AURC.""")
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by `facegan attributes train`")
    p.add_argument("--out", type=Path, required=True, help="folder for report.md, results.json and the plots")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"), help="which split to evaluate (default test)")
    p.add_argument("--compare", type=Path, help="a plain-softmax checkpoint trained on the same data, for the AURC comparison")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="""with --compare: N bootstrap draws over the test people (over files where a dataset names
                       nobody, as UTKFace) for the intervals of the top-1 and AURC differences (default 1000; 0: none)""")
    p.add_argument("--dataset", metavar="NAME=ROOT", help="evaluate on this dataset instead (cross-domain), e.g. lfw=/data/lfw")
    p.add_argument("--head", help="with --dataset: which trained head to apply (default: the first)")
    p.add_argument("--work-dir", type=Path, help="where aligned caches of --dataset go (default: the run folder)")
    add_runtime_options(p, batch_size=256)
    p.add_argument("--explain", type=int, default=0, metavar="N",
                   help="""add Grad-CAM overlays of N test faces per dataset to the report, with the randomised-head
                       sanity check (default 0: none)""")
    p.add_argument("--explain-tasks", help="comma-separated tasks for --explain (default: each head's first six)")
    p.add_argument("--bf16", action="store_true",
                   help="""predict in bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX; about 2x the
                       float32 speed there, logits within about 2e-3); elsewhere float32, with a warning. BatchNorms
                       are folded into the convolutions either way (outputs within 1e-5)""")
    p.set_defaults(func=_run_eval)

    p = add_command(sub, "predict", "align raw photos and predict every attribute with its confidence grade",
        """Align each photo with the MTCNN aligner (the template and size the model was trained with),
        run one dataset head of the model, and write JSON: per image and task the prediction, probability,
        confidence and grade S/A/B/C/D. Unreadable files and photos with no face are listed with their reason.""")
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by `facegan attributes train`")
    p.add_argument("inputs", type=Path, nargs="+", help="image files and/or folders of images")
    p.add_argument("--head", help="which dataset's head to use (default: the first one trained)")
    p.add_argument("--out", type=Path, help="""write the results here (default: print them): FILE.json, one document
        at the end; FILE.jsonl, one record per photo appended as each batch is done, so that a rerun resumes
        where an interrupted one stopped, and under torchrun every process takes its share of the photos""")
    add_runtime_options(p, batch_size=32, batch_help="photos aligned and predicted per batch")
    p.add_argument("--bf16", action="store_true",
                   help="""predict in bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX; about 2x the
                       float32 speed there, logits within about 2e-3); elsewhere float32, with a warning. BatchNorms
                       are folded into the convolutions either way (outputs within 1e-5)""")
    p.set_defaults(func=_run_predict)

    p = add_command(
        sub, "verify", "face verification accuracy of an identity model on unseen people (LFW protocol, ROC)",
        """Verify pairs of faces of people held out from training, with the embedding of a model trained
        with `attributes train --identity`. Same- and different-person pairs are drawn deterministically in
        person-disjoint folds and saved as OUT/pairs.txt in LFW's format; each fold is scored with the threshold
        that is best on the other folds. Writes OUT/results.json, OUT/report.md and OUT/roc.png.""")
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
    add_runtime_options(p, batch_size=256)
    p.set_defaults(func=_run_verify)

    p = add_command(
        sub, "explain", "Grad-CAM heat maps of chosen heads on aligned photos, with a randomised-head sanity check",
        """Align each photo as `predict` does and draw, for each chosen task, where the head looks:
        Grad-CAM on a trunk layer (default: the last convolutional block), explaining the predicted answer. The
        sanity check of Adebayo et al. re-draws the head's weights at random and draws the maps again: maps that
        explain the head change (low rank correlation). Writes OUT/gradcam.png and OUT/gradcam.json.""")
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by `facegan attributes train`")
    p.add_argument("inputs", type=Path, nargs="+", help="image files and/or folders of images")
    p.add_argument("--out", type=Path, required=True, help="folder for gradcam.png and gradcam.json")
    p.add_argument("--head", help="which dataset's head (default: the first one trained)")
    p.add_argument("--tasks", help="comma-separated task names to explain (default: the head's first six)")
    p.add_argument("--layer", help="trunk layer name to take the activations from (default: the trunk's last conv block)")
    p.add_argument("--no-sanity", action="store_true", help="skip the randomised-head sanity check")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomised head (default 0)")
    add_runtime_options(p)
    p.set_defaults(func=_run_explain)

    p = add_command(
        sub, "prune", "remove the trunk channels with the smallest BN scales, fine-tune, and measure size, speed and accuracy",
        """Network slimming, second half. Train first with L1 on the trunk's BatchNorm scales
        (`attributes train --slim RATIO`: the adaptive coefficient (Zhao 2020, ch. 5) reaches that share of
        sparse channels by itself; --set slim.adaptive=false slim.l1=X for a fixed coefficient). This command
        then removes the RATIO of trunk channels with the smallest |gamma| under one global threshold, rebuilds
        a smaller model that loads as an ordinary checkpoint (OUT/pruned.pt), fine-tunes it (OUT/finetune/), and
        reports parameters, FLOPs, CPU images/s (measured side by side in this run) and accuracy before and
        after (OUT/prune.md, OUT/prune.json). Only the alexnet_bn trunk can be pruned.""")
    p.add_argument("checkpoint", type=Path, help="a checkpoint of `attributes train` (ideally trained with --slim)")
    p.add_argument("--out", type=Path, required=True, help="folder for pruned.pt, finetune/, prune.md and prune.json")
    p.add_argument("--ratio", type=float, default=0.5, help="share of the trunk's channels to remove (default 0.5)")
    p.add_argument("--min-keep", type=float, default=0.1, help="share of each layer's channels always kept (default 0.1)")
    p.add_argument("--finetune-steps", type=int, default=500, help="fine-tuning steps after pruning (default 500; 0: none)")
    p.add_argument("--split", default="test", choices=("val", "test"), help="split for the accuracies (default test)")
    p.add_argument("--weights", default="raw", choices=("raw", "ema"),
                   help="""prune the trained weights (raw, default: the ones the L1 made sparse) or their moving
                       average (ema, whose BN scales lag the L1); 'original' in the report is the same weights""")
    add_runtime_options(p, device=None, raw=False, progress=True)
    p.set_defaults(func=_run_prune)

    p = add_command(
        sub, "distill", "train a smaller student from a trained teacher's outputs, beside the same student trained alone",
        """Knowledge distillation on every head: KL at temperature T for binary, categorical and
        SA-softmax heads (SA over all N+1 outputs), L2 to the teacher's value for age. The student is the
        teacher's run config with its trunk at half width, changed further by --set (e.g. --set
        model.trunk.width=0.125). Trains OUT/student (with the teacher) and OUT/alone (same student, config,
        seed and steps, labels only), evaluates them and the teacher, and writes OUT/distill.md and
        OUT/distill.json.""")
    p.add_argument("teacher", type=Path, help="a checkpoint of `attributes train`")
    p.add_argument("--out", type=Path, required=True, help="folder for student/, alone/, the evaluations and distill.md")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change the student's config (repeatable), e.g. model.trunk.width=0.125")
    p.add_argument("--temperature", type=float, default=4.0, help="softening temperature T (default 4)")
    p.add_argument("--weight", type=float, default=1.0, help="weight of the distillation term (default 1)")
    p.add_argument("--steps", type=int, help="training steps of each student (default: the teacher's)")
    p.add_argument("--no-baseline", action="store_true", help="do not train the student alone")
    p.add_argument("--split", default="test", choices=("val", "test"), help="split for the comparison (default test)")
    add_runtime_options(p, device=None, raw=False, progress=True)
    p.set_defaults(func=_run_distill)

    p = add_command(
        sub, "trunk-weights", "save a trained model's trunk as a small file that another run starts from",
        """Writes the trunk of CHECKPOINT (its EMA weights when the run kept them) to OUT, with the trunk's
        settings and a line saying where it came from. A run starts from it with --init-from OUT (or --set
        model.trunk.checkpoint=OUT); the files in attributes/weights/ that ship with facegan were made this way and
        are named without a path (model.trunk.checkpoint: NAME).""")
    p.add_argument("checkpoint", type=Path, help="a checkpoint of one model of `attributes train` (of an ensemble: "
                                                 "OUT/members/K/checkpoints/latest.pt)")
    p.add_argument("--out", type=Path, required=True, help="the weights file to write (.pt)")
    p.add_argument("--about", default="", help="how the model was trained, kept in the file (default: its checkpoint and step)")
    p.set_defaults(func=_run_trunk_weights)


def _input_size(value: str) -> int:
    size = int(value) if value.strip().isdigit() else 0
    if size < 32:
        raise argparse.ArgumentTypeError(f"a face size in pixels of at least 32, got {value!r}")
    return size


def _run_train(args: argparse.Namespace) -> int:
    from attributes.config import AttributeRunConfig, add_datasets
    from engine.config import apply_overrides, from_dict, to_dict

    # --set datasets.NAME.* needs the datasets of --dataset in place first.
    dataset_overrides = [o for o in args.overrides if o.startswith("datasets.")]
    config = run_config_from_args(AttributeRunConfig, args, {
        "model.trunk.name": args.trunk, "model.trunk.input_size": args.input_size,
        "model.head.sa_softmax": True if args.sa_softmax else None,
        "model.head.pos_weight": True if args.pos_weight else None, "model.trunk.checkpoint": args.init_from,
        "sampler.balance": "inverse_frequency" if args.balanced_sampling else None,
        "loss.f_measure": args.f_measure, "loss.f_measure_variant": args.f_measure_variant,
        "loss.center": args.center_loss, "loss.contrastive_center": args.contrastive_center_loss,
        "loss.exclusive": args.exclusive, "slim.target": args.slim, "distill.teacher": args.teacher,
        "members": args.members,
    }, late_overrides=[o for o in args.overrides if o not in dataset_overrides])
    config = add_datasets(config, args.datasets, identity=args.identity)
    if dataset_overrides:
        config = from_dict(AttributeRunConfig, apply_overrides(to_dict(config), dataset_overrides))
    from attributes.train import train

    result = train(config)
    out = Path(config.trainer.out_dir)
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


def _run_eval(args: argparse.Namespace) -> int:
    from attributes.evaluate import evaluate_checkpoint

    tasks = [t.strip() for t in args.explain_tasks.split(",") if t.strip()] if args.explain_tasks else None
    results = evaluate_checkpoint(args.checkpoint, args.out, args.split, args.compare, args.dataset, args.head,
                                  args.device, args.batch_size, use_ema=not args.raw, work_dir=args.work_dir,
                                  explain=args.explain, explain_tasks=tasks, bf16=args.bf16, bootstrap=args.bootstrap)
    for label, section in results["datasets"].items():
        parts = [f"{label}: {section['faces']} faces"]
        binary = section.get("binary", {})
        if "threshold_0.5" in binary:
            parts.append(f"mean accuracy {binary['threshold_0.5']['mean_accuracy']:.4f}")
            if "calibrated" in binary:
                parts.append(f"calibrated {binary['calibrated']['mean_accuracy']:.4f}")
        for name, shared in binary.items():  # a task shared across datasets (gender, say) has its own group
            if isinstance(shared, dict) and "threshold_0.5" in shared:
                parts.append(f"{name} accuracy {shared['threshold_0.5']['mean_accuracy']:.4f}")
        for name, age in section["age"].items():
            parts.append(f"{name} MAE {age['mae']:.2f}")
        for name, cat in section["categorical"].items():
            parts.append(f"{name} accuracy {cat['accuracy']:.4f}")
        print("; ".join(parts))
    print(f"report: {results['files'].get('markdown', args.out / 'report.md')}")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from attributes.predict import predict_paths

    result = predict_paths(args.checkpoint, args.inputs, args.head, args.device, args.batch_size, use_ema=not args.raw,
                           out=args.out, bf16=args.bf16)
    if args.out:
        counts = result["counts"]
        print(f"wrote {args.out}: {counts['aligned'] + counts['center_crop']} face(s) predicted, "
              f"{counts['no_face']} without a face, {counts['unreadable']} unreadable")
    else:
        print(json.dumps(result, indent=2))
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from attributes.verification import verify_checkpoint

    result = verify_checkpoint(args.checkpoint, args.out, args.on, args.head, args.split, args.pairs, args.folds,
                               args.seed, args.pairs_file, args.device, args.batch_size, not args.raw, args.work_dir)
    print(f"{result['dataset']}/{result['split']}: {result['pairs']['same']} + {result['pairs']['different']} pairs of "
          f"{result['people']} people; accuracy {100 * result['accuracy_mean']:.2f} ± {100 * result['accuracy_sd']:.2f}% "
          f"over {result['pairs']['folds']} folds, AUC {result['auc']:.4f}")
    print(f"report: {args.out / 'report.md'}")
    return 0


def _run_explain(args: argparse.Namespace) -> int:
    from attributes.explain import explain_paths

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    summary = explain_paths(args.checkpoint, args.inputs, args.out, args.head, tasks, args.layer, not args.no_sanity,
                            args.device, not args.raw, args.seed)
    print(f"explained {len(summary['faces'])} face(s) x {len(summary['tasks'])} task(s) at layer {summary['layer']}; "
          f"{len(summary['skipped'])} skipped")
    if "sanity" in summary:
        print(f"sanity check: mean rank correlation with a randomised head {summary['sanity']['mean_rank_correlation']:.3f} "
              "(near 1 would mean the maps ignore the head)")
    print(f"wrote {args.out / 'gradcam.png'}")
    return 0


def _run_prune(args: argparse.Namespace) -> int:
    from attributes.prune import prune_checkpoint

    report = prune_checkpoint(args.checkpoint, args.out, args.ratio, args.min_keep, args.finetune_steps, args.split,
                              args.threads, not args.no_progress, args.weights)
    print(f"channels {report['channels']['original']} -> {report['channels']['pruned']}; parameters "
          f"{report['parameters']['pruned'] / report['parameters']['original']:.2f}x, FLOPs "
          f"{report['flops']['pruned'] / report['flops']['original']:.2f}x, CPU speed {report['speedup']:.2f}x")
    for stage, values in report["accuracy"].items():
        print(f"{stage}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in values.items()))
    print(f"report: {args.out / 'prune.md'}")
    return 0


def _run_distill(args: argparse.Namespace) -> int:
    from attributes.distill import distill

    summary = distill(args.teacher, args.out, args.overrides, args.temperature, args.weight, args.steps,
                      not args.no_baseline, args.split, args.threads, not args.no_progress)
    for name, m in summary["models"].items():
        print(f"{name}: " + ", ".join(f"{d} {100 * a:.2f}%" for d, a in m["accuracy"].items()) +
              f" ({m['parameters']:,} parameters)")
    print(f"report: {args.out / 'distill.md'}")
    return 0


def _run_trunk_weights(args: argparse.Namespace) -> int:
    from attributes.trunks import write_trunk_weights

    record = write_trunk_weights(args.checkpoint, args.out, args.about)
    count = sum(v.numel() for v in record["state_dict"].values())
    print(f"{args.out}: {record['trunk']['name']} trunk, {count:,} numbers; {record['about']}")
    return 0
