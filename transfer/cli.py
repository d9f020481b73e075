"""The `facegan` command. Each package owns its subcommands in its own `cli` module and
registers them here, so this file only composes them."""
from __future__ import annotations

import argparse
import logging
import sys

from engine.errors import FaceganError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from attributes import cli as attributes_cli
    from data_prep import cli as data_prep_cli
    from gan.generators import cli as generators_cli
    from gan.sr import cli as sr_cli
    from transfer import demo, study_cli

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
    study_cli.register(subparsers)
    demo.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        # Before any command runs, so that commands without a --threads option (eval, predict,
        # data cache) also keep to FACEGAN_THREADS beside another job.
        from engine.device import configure_threads

        configure_threads()
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

if __name__ == "__main__":
    raise SystemExit(main())
