"""Reading a runtime's log: its last lines, where a start began, and the sentence that explains an exit.

A runtime writes JSON lines (``gazelle.runtime.logs``) and, before its logging is set up, plain text
(a traceback, gunicorn's own lines). Both are read here, for every target that keeps a runtime's output
in a file on this host.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

EXIT_MISMATCH = 3   # the runtime's exit status for an environment mismatch (gazelle.runtime.serve)
EXIT_MODEL = 4      # ... for a model that raised while loading


def exit_cause(status: int, lines: list[str]) -> str:
    """The sentence a person needs, read from the runtime's last log lines."""
    entry = last_error(lines)
    error = entry.get("error") or entry.get("message")
    if status == EXIT_MISMATCH:
        differences = entry.get("differences")
        if isinstance(differences, list) and differences:
            return "environment mismatch: " + "; ".join(str(d) for d in differences)
        return f"environment mismatch: {error or 'the runtime refused this environment'}"
    if status == EXIT_MODEL:
        return f"the model raised while loading: {error or 'see the log lines'}"
    if status < 0 or status > 128:
        number = -status if status < 0 else status - 128   # killed, or a sandbox reporting 128 + signal
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"the runtime was killed by {name}" + (f": {error}" if error else "")
    return f"the runtime exited with status {status}" + (f": {error}" if error else "")


def last_error(lines: list[str]) -> dict[str, Any]:
    """The last JSON log line that reports an error (``error``, ``differences``); else the last plain line."""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and (entry.get("error") or entry.get("differences")):
            return entry
    plain = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("{")]
    return {"error": plain[-1]} if plain else {}


def append_event(path: Path, event: str, message: str) -> None:
    """One line in the runtime's own JSON log format, so ``logs`` shows it in place."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    line = json.dumps({"ts": stamp, "level": "warning", "event": event, "message": message}, separators=(",", ":"))
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError:
        pass   # a full disk must not stop the restart this line reports


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_from(path: Path, offset: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()


def tail(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of ``path`` without reading all of a long log."""
    if count <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            block, data = 64 * 1024, b""
            pos = end
            while pos > 0 and data.count(b"\n") <= count:
                step = min(block, pos)
                pos -= step
                handle.seek(pos)
                data = handle.read(step) + data
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-count:]
