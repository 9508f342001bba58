"""Processes on this host: what runs under a pid, signals, records (``pid_alive`` is gazelle.procs')."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from gazelle.procs import pid_alive

__all__ = ["pid_alive", "command_line", "send", "send_group", "read_json", "write_json"]


def command_line(pid: int) -> list[str] | None:
    """The arguments ``pid`` was started with; None where /proc cannot say."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return [a.decode(errors="replace") for a in args]


def send(pid: int, sig: signal.Signals) -> None:
    if pid > 0:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def send_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group that ``pid`` leads (a runtime and everything it started)."""
    if pid > 0:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Written to a temporary file, then renamed: a reader never sees half a record."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)
