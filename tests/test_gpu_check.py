"""`benchmarks/gpu_check.py --device cpu --quick`: every stage of the GPU check runs (here on the
CPU, at tiny sizes), so that the check is ready whenever a GPU is lent."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_the_quick_gpu_check_runs_every_stage_on_the_cpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    report = tmp_path / "gpu_check.json"
    assert module.main(["--device", "cpu", "--quick", "--threads", "1", "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    assert [row["stage"] for row in rows] == ["dcgan", "began", "sr", "attributes", "align", "sr apply", "predict"]
    assert all(row["rate"] and row["peak_mb"] for row in rows)
    out = capsys.readouterr().out
    assert "smoke stage passed" in out and "| stage | what | speed |" in out
