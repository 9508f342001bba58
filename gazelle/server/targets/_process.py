"""Processes on this host: is a pid alive (and not a zombie), what runs under it, signals, records."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie answers kill(0) but serves nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


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
