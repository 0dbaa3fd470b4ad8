"""The command line and the demo behind it."""

import subprocess
import sys

import numpy as np

import skocc
from skocc._demo import run_demo
from skocc.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"skocc {skocc.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "skocc.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and skocc.__version__ in out.stdout


def test_demo_reports_every_detector():
    lines = []
    result = run_demo(digits=[0, 1], log=lines.append)
    assert set(result["auroc"]) == {"ConvAEOneClass", "OneClassSVM", "IsolationForest", "LOF(novelty)"}
    for scores in result["auroc"].values():
        assert len(scores) == 2 and all(0.5 < s <= 1.0 for s in scores)
    assert any(line.startswith("mean") for line in lines)
    assert np.mean(result["auroc"]["ConvAEOneClass"]) > 0.95
