"""Where the local target keeps what outlives a server: each runtime's record, log and socket.

``{data_dir}/run/<name>-v<version>.json`` records a runtime's pid, socket, interpreter and bundle, so
a later server can adopt it; ``{data_dir}/logs/<name>-v<version>.log`` is its output. Sockets live in
``{tmp}/gazelle-<uid>/<key>/``: short (a socket path may not exceed 107 bytes), fixed per data
directory and version, under a root only this user may enter. Limits: a record is trusted only
while its pid still runs a gazelle runtime on that socket (``is_runtime``; pids get reused), and
without ``/proc`` a live pid is trusted as it is.
"""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from gazelle.errors import TargetError
from gazelle.server.targets import _process


class RunFiles:
    """The paths of one data directory's runtimes. The constructor does no I/O."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.run_dir = self.data_dir / "run"

    def record(self, name: str, version: int) -> Path:
        return self.run_dir / f"{name}-v{version}.json"

    def log(self, name: str, version: int) -> Path:
        return self.data_dir / "logs" / f"{name}-v{version}.log"

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, in name order."""
        found = []
        for path in sorted(self.run_dir.glob("*.json")):
            record = _process.read_json(path)
            if record is not None and "name" in record and "version" in record:
                found.append(record)
        return found

    def socket_dir(self, name: str, version: int) -> Path:
        key = hashlib.sha256(f"{self.data_dir.resolve()}\0{name}\0{version}".encode()).hexdigest()[:20]
        return private_root() / key


def private_root() -> Path:
    """``{tmp}/gazelle-<uid>``: created 0700, and refused if someone else made it or can enter it."""
    root = Path(tempfile.gettempdir()) / f"gazelle-{os.getuid()}"
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise TargetError(f"{root} is not a private directory of this user (owner uid {info.st_uid}, "
                          f"mode {stat.S_IMODE(info.st_mode):o}): refusing to put runtime sockets there",
                          hint=f"remove {root}, or set TMPDIR to a directory only this user can open")
    return root


def is_runtime(pid: int, socket: str) -> bool:
    """Whether ``pid`` is still a gazelle runtime on ``socket`` (pids get reused)."""
    if pid <= 0:
        return False
    args = _process.command_line(pid)
    if args is None:
        return not Path("/proc/self").exists() and _process.pid_alive(pid)   # no /proc here: trust the pid
    return "gazelle.cli" in args and "runtime" in args and socket in args
