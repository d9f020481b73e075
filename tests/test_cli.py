"""The `facegan` command: every subcommand is reachable and every option explains itself."""
import argparse
import subprocess
import sys

import pytest

from transfer.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, path + (name,))


def test_every_command_and_option_has_help():
    missing = []
    for path, parser in _walk(build_parser()):
        if path and not (parser.description or "").strip():
            missing.append(f"{' '.join(path)}: no description")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (action.help or "").strip():
                missing.append(f"{' '.join(path) or 'facegan'} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not missing, "\n".join(missing)


def test_expected_commands_exist():
    commands = {path for path, _ in _walk(build_parser()) if path}
    for expected in [("align",), ("demo",), ("data",), ("data", "info"), ("data", "synth"), ("data", "cache"), ("gan", "train"), ("gan", "sample"), ("gan", "eval")]:
        assert expected in commands, expected


def test_help_runs_as_a_console_command():
    result = subprocess.run([sys.executable, "-m", "transfer.cli", "align", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "manifest" in result.stdout


def test_user_errors_are_messages_not_tracebacks(tmp_path, capsys):
    code = main(["align", str(tmp_path / "does-not-exist"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "does-not-exist" in err and "Traceback" not in err


def test_every_command_keeps_to_facegan_threads(tmp_path, monkeypatch, capsys):
    # Commands without a --threads option (attributes eval, predict) must still keep to the
    # environment's thread count, or they oversubscribe the cores beside a training job.
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("FACEGAN_THREADS", "1")
    try:
        torch.set_num_threads(2)
        assert main(["attributes", "eval", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out")]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_input_size_accepts_every_shipped_preset_size_and_refuses_tiny_faces(capsys):
    # The judged CelebA preset trains at 80 px: --input-size must not refuse what a preset uses.
    from engine.presets import preset_names, resolve_preset
    import yaml

    sizes = set()
    for name in preset_names("attributes"):
        trunk = ((yaml.safe_load(resolve_preset(name, "attributes").read_text()) or {}).get("model") or {}).get("trunk") or {}
        sizes.add(int(trunk.get("input_size", 64)))
    assert 80 in sizes
    parser = build_parser()
    for size in sorted(sizes):
        args = parser.parse_args(["attributes", "train", "--input-size", str(size), "--dataset", "synthetic"])
        assert args.input_size == size
    for bad in ("16", "eighty"):
        with pytest.raises(SystemExit):
            parser.parse_args(["attributes", "train", "--input-size", bad, "--dataset", "synthetic"])
        assert "at least 32" in capsys.readouterr().err
