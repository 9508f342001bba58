"""The Makefile's venv rule, as ``make -n`` would run it: the first ``make demo`` is not silent."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_venv_rule_says_what_it_does_and_lets_pip_show_its_progress(tmp_path: Path) -> None:
    done = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", "venv"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    [announce] = [line for line in lines if "Installing Gazelle" in line]
    installs = [line for line in lines if "-m pip install" in line]
    assert installs and lines.index(announce) < lines.index(installs[0])
    assert not any(" -q" in install.split("install", 1)[1] for install in installs)
