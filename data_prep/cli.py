"""Subcommands owned by data_prep: `facegan align` and `facegan data ...`."""
from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from data_prep import cache, synthetic
    from data_prep.align import cli as align_cli
    from data_prep.datasets import cli as datasets_cli

    align_cli.register(subparsers)
    data = subparsers.add_parser(
        "data",
        help="inspect datasets, generate the built-in synthetic faces, build aligned-face caches",
        description="Dataset utilities: `info` reads a dataset and prints its counts, `synth` writes "
        "the built-in synthetic face dataset, `cache` aligns a dataset once into memory-mapped shards.",
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    datasets_cli.register(data_sub)
    synthetic.register_cli(data_sub)
    cache.register_cli(data_sub)
