"""The rope-ref command."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

from rope_ref._cli import main


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("numpy", "array_api_compat", "torch", "jax", "dask", "cupy"):
        assert name in out
    import numpy

    assert numpy.__version__ in out


def test_demo_reports_naive_error(capsys):
    assert main(["demo", "--position", str(2**31 - 1)]) == 0
    out = capsys.readouterr().out
    assert "norm preserved" in out
    off = float(out.split("plain float64 is off by ")[1].split(" ulp")[0])
    assert off > 1e6


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "rope_ref", "info"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert out.stdout.startswith("rope_ref ")


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out
