"""The `facegan` command, and its `transfer run` and `demo` subcommands.

Each package declares its own subcommands in one parse-only `cli` module (data_prep.cli,
gan.generators.cli, gan.sr.cli, attributes.cli, and this one for transfer's); `build_parser`
composes them, and `main` runs the chosen one, turning a FaceganError into a one-line message
and exit status 2, and Ctrl-C into status 130.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.errors import FaceganError
from engine.options import add_command, add_runtime_options

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from attributes import cli as attributes_cli
    from data_prep import cli as data_prep_cli
    from gan.generators import cli as generators_cli
    from gan.sr import cli as sr_cli

    parser = argparse.ArgumentParser(
        prog="facegan",
        description=(
            "Face generation, super-resolution and cross-domain attribute recognition. "
            "Every face is normalised by the MTCNN-based aligner. Run `facegan COMMAND --help` "
            "for the options of each command. Every command runs torch on $FACEGAN_THREADS CPU threads "
            "(default: all cores); commands with a --threads option take that instead."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_prep_cli.register(subparsers)
    generators_cli.register(subparsers)
    sr_cli.register(subparsers)
    attributes_cli.register(subparsers)
    _register_transfer(subparsers)
    _register_demo(subparsers)
    _register_export(subparsers)
    _register_serve(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        # Before any command runs: its --threads when it has one, else $FACEGAN_THREADS, so that
        # no command oversubscribes the cores beside another job.
        from engine.device import configure_threads

        configure_threads(getattr(args, "threads", None))
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted; finished outputs are kept and a rerun resumes", file=sys.stderr)
        return 130
    except FaceganError as exc:
        print(f"facegan {args.command}: error: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------ transfer run
def _register_transfer(subparsers: argparse._SubParsersAction) -> None:
    from engine.presets import presets_help

    group = add_command(
        subparsers, "transfer", "cross-domain attribute study: train every arm, test on every domain, report with intervals",
        """The cross-domain attribute study of Yu (2017, ch. 4): a study trains each arm (source only,
        target only, SR-mix, bicubic-mix, augment-mix, colour-match, DANN, joint) with the same trunk and step
        budget for every seed, tests each on every domain's identity-disjoint test split, and writes
        report.html, results.md and results.json with balanced accuracy, bootstrap intervals over test people
        and Holm-corrected comparisons against source-only.""")
    sub = group.add_subparsers(dest="transfer_command", metavar="TRANSFER_COMMAND", required=True)
    p = add_command(sub, "run", "run (or resume) a study from a preset or a YAML file",
        """Run a study. Settings come from the dataclass defaults (transfer.config.StudyConfig), then
        CONFIG, then the options below, then --set KEY=VALUE. Stages (alignment caches, SR models, transformed
        face sets) and cells (one trained model per recipe and seed) are cached under fingerprints of their
        settings in OUT, so a rerun skips what is done and an interrupted cell resumes from its checkpoint.""")
    p.add_argument("config", help="the study: " + presets_help("transfer"))
    p.add_argument("--dataset", dest="datasets", action="append", default=[], metavar="DOMAIN=ROOT",
                   help="""where a domain's dataset is (repeatable), e.g. lfw=/data/lfw (domains.DOMAIN.root;
                       default $FACEGAN_DATA/<source>)""")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="""override any setting by its dotted path (repeatable), e.g. budget.steps=200 or
                       'arms=[source_only,colour_match]'""")
    p.add_argument("--out", help="study folder (out_dir)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (seeds)")
    p.add_argument("--steps", type=int, help="optimiser steps of every arm (budget.steps)")
    p.add_argument("--threads", type=int, help="torch CPU threads (budget.threads); set it when other jobs share the machine")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (budget.device)")
    p.add_argument("--dry-run", action="store_true", help="check the configuration and list the trainings it needs, then stop")
    add_runtime_options(p, device=None, threads=False, raw=False, progress=True)
    p.set_defaults(func=_transfer_run)


def _transfer_run(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.presets import resolve_preset
    from transfer.config import StudyConfig
    from transfer.study import plan_study, run_study

    roots = []
    for item in args.datasets:
        domain, sep, root = item.partition("=")
        if not sep or not domain.strip() or not root:
            raise FaceganError(f"--dataset {item!r}: expected DOMAIN=ROOT")
        roots.append(f"domains.{domain.strip()}.root={root}")
    shortcuts = {"out_dir": args.out, "budget.steps": args.steps, "budget.threads": args.threads,
                 "budget.device": args.device, "seeds": f"[{args.seeds}]" if args.seeds else None}
    overrides = [f"{k}={v}" for k, v in shortcuts.items() if v is not None] + roots + list(args.overrides)
    config = load_config(StudyConfig, resolve_preset(args.config, "transfer"), overrides)
    if args.dry_run:
        distinct = plan_study(config)
        print(f"study {config.name!r}: {len(config.directions)} direction(s), {len(config.arms)} arm(s), "
              f"{len(config.seeds)} seed(s); {len(distinct)} distinct recipe(s) x {len(config.seeds)} seed(s) = "
              f"{len(distinct) * len(config.seeds)} cells; every arm takes {config.budget.steps} optimiser steps in all "
              "(an adapting arm's stages share them; AdaBN takes none)")
        for uses in distinct.values():
            print("  " + ", ".join(uses))
        return 0
    results = run_study(config, progress=not args.no_progress)
    for line in results["summary"]:
        print(line)
    print(f"report: {Path(config.out_dir) / 'report.html'}  (also results.md, results.json)")
    return 0


# ------------------------------------------------------------------------------------ demo
def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    from transfer.demo import DemoConfig

    defaults = DemoConfig()
    p = add_command(subparsers, "demo", "run the whole pipeline on built-in data and write report.html",
        """Run every part of facegan end to end on the bundled photo and the built-in synthetic faces
        (no downloads), and write report.html and report.md that show the results as pictures and tables.""")
    p.add_argument("--out", type=Path, default=defaults.out_dir, help=f"output folder (default {defaults.out_dir})")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed for the synthetic data and sampling")
    p.add_argument("--num-identities", type=int, default=defaults.num_identities,
                   help=f"synthetic identities to generate (default {defaults.num_identities})")
    p.add_argument("--images-per-identity", type=int, default=defaults.images_per_identity,
                   help=f"synthetic images per identity and domain (default {defaults.images_per_identity})")
    for part, trained in (("gan", "the demo's DCGAN"), ("sr", "the demo's x4 SR model"),
                          ("attribute", "the demo's attribute model"), ("transfer", "each arm of the demo's study")):
        default = getattr(defaults, f"{part}_steps")
        p.add_argument(f"--{part}-steps", type=int, default=default,
                       help=f"training steps of {trained} (default {default}; 0 skips it)")
    add_runtime_options(p, device=None, raw=False, progress=True)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from transfer.demo import DemoConfig, run_demo

    path = run_demo(DemoConfig(
        out_dir=args.out, seed=args.seed, num_identities=args.num_identities,
        images_per_identity=args.images_per_identity, threads=args.threads, gan_steps=args.gan_steps,
        sr_steps=args.sr_steps, attribute_steps=args.attribute_steps, transfer_steps=args.transfer_steps,
        progress=not args.no_progress,
    ))
    print(f"report: {path.resolve()}")
    return 0


# ------------------------------------------------------------------------------------ export
def _register_export(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "export", "write a trained generator, SR model or attribute model to ONNX",
        """Export the model of a `gan train`, `sr train` or `attributes train` checkpoint (an ensemble too) to
        an ONNX file with a dynamic batch dimension, for onnxruntime and other deployment tools. The file's
        metadata (facegan.* keys, JSON values) says how to prepare the input: its size and value range, the
        alignment template's points, and for attribute models every output's tasks, classes, decoding and
        calibrated thresholds, the label schemas and the SA grade bounds. Before writing, the file is run in
        onnxruntime on a batch of the built-in synthetic faces (or latents) and compared with PyTorch: a file
        whose outputs differ by more than rtol=1e-3, atol=1e-4 is not written. Then both are timed on this
        CPU and the images/s printed. Needs the export extra: pip install 'facegan[export]'.""")
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help="a checkpoint, e.g. runs/demo/attributes/checkpoints/latest.pt")
    p.add_argument("--out", type=Path, help="the ONNX file to write (default: CKPT with the suffix .onnx)")
    p.add_argument("--batch", type=int, default=8, help="inputs in the check and timing batch (default 8, at least 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the check inputs (default 0)")
    p.add_argument("--time", type=float, default=2.0, metavar="SECONDS",
                   help="seconds to time onnxruntime and PyTorch each (default 2; 0 skips the timing)")
    p.add_argument("--json", action="store_true", help="print the check as one JSON object instead of text")
    add_runtime_options(p, device=None)
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    import json

    from transfer.export import export_checkpoint

    if args.batch < 2:
        raise FaceganError("--batch must be at least 2, so that the exported batch dimension stays dynamic")
    out = args.out or args.checkpoint.with_suffix(".onnx")
    family, check = export_checkpoint(args.checkpoint, out, batch=args.batch, seed=args.seed, use_ema=not args.raw,
                                      time_seconds=max(0.0, args.time))
    if args.json:
        print(json.dumps({"out": str(out), "kind": family, **check.to_dict()}))
    else:
        print(f"wrote {out} ({family})")
        print("\n".join(check.lines()))
    return 0


# ------------------------------------------------------------------------------------ serve
def _register_serve(subparsers: argparse._SubParsersAction) -> None:
    from transfer.app.serve import ServeConfig

    defaults = ServeConfig()
    p = add_command(subparsers, "serve", "a local web page: faces with graded attributes, super-resolution, generation",
        """Start a web page on this machine over trained models: a Faces tab (upload a photo or use the bundled
        astronaut; every face found, boxed with its five landmarks, aligned, every task predicted with its
        confidence and S-D grade, and a Grad-CAM heat map of a chosen task), a Super-resolve tab (a face
        aligned, brought to the model's input size, then bicubic beside the model's output, with a download)
        and a Generate tab (a grid from a seed, and a slerp strip between two seeds). With no checkpoint given
        it serves the models `facegan demo` wrote. It listens on 127.0.0.1 only unless --host names another
        interface, never makes a public link, and loads nothing from outside this machine. Needs the app
        extra: pip install 'facegan[app]'.""")
    p.add_argument("--attributes", type=Path, metavar="CKPT", help="an `attributes train` checkpoint (a network or an ensemble)")
    p.add_argument("--sr", type=Path, metavar="CKPT", help="an `sr train` checkpoint")
    p.add_argument("--gan", type=Path, metavar="CKPT", help="a `gan train` checkpoint")
    p.add_argument("--demo-dir", type=Path, default=defaults.demo_dir,
                   help=f"with no checkpoint given, serve the models `facegan demo` wrote here (default {defaults.demo_dir})")
    p.add_argument("--host", default=defaults.host,
                   help=f"interface to listen on (default {defaults.host}: this machine only); 0.0.0.0 opens it to the network")
    p.add_argument("--port", type=int, default=defaults.port, help=f"port (default {defaults.port})")
    p.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_mb,
                   help=f"largest upload accepted, in MB (default {defaults.max_upload_mb:g})")
    add_runtime_options(p, device=None, raw=False)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from transfer.app.serve import ServeConfig, serve

    serve(ServeConfig(attributes=args.attributes, sr=args.sr, gan=args.gan, demo_dir=args.demo_dir, host=args.host,
                      port=args.port, max_upload_mb=args.max_upload_mb))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
