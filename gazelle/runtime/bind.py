"""Where ``gazelle runtime`` listens, how many workers it runs, and which bundle it serves.

Each comes from the command line when given there, else from its environment twin, else a default:

    BUNDLE      GAZELLE_RUNTIME_BUNDLE    (required one way or the other)
    --socket    GAZELLE_RUNTIME_SOCKET    a unix socket path; when set, the runtime listens ONLY there
    --host      GAZELLE_RUNTIME_HOST      127.0.0.1
    --port      GAZELLE_RUNTIME_PORT      8080
    --workers   GAZELLE_RUNTIME_WORKERS   the CPUs this process may use (see :func:`available_cpus`)

A unix socket is created mode 0600 inside a directory the caller made (the runtime never creates or
loosens directories: who may connect is decided by that directory and the socket's owner). A value
that cannot work raises :class:`gazelle.errors.ConfigError` naming the option and its variable.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from gazelle.errors import ConfigError
from gazelle.runtime.settings import env_int

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class Listen:
    """The resolved answer: what gunicorn binds, with how many workers, serving which bundle."""

    bundle: Path
    workers: int
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    socket: Path | None = None

    @property
    def address(self) -> str:
        """gunicorn's ``bind`` value."""
        if self.socket is not None:
            return f"unix:{self.socket}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix:{self.socket}"
        return f"http://{self.address}/"


def resolve(bundle: str | None, *, host: str | None = None, port: int | None = None,
            socket: str | None = None, workers: int | None = None,
            environ: Mapping[str, str] | None = None, cpus: int | None = None) -> Listen:
    """Options given on the command line win; ``None`` means "not given": read the twin, then default."""
    env = os.environ if environ is None else environ
    bundle_path = bundle or env.get("GAZELLE_RUNTIME_BUNDLE", "").strip()
    if not bundle_path:
        raise ConfigError("no bundle to serve: give BUNDLE on the command line or set GAZELLE_RUNTIME_BUNDLE")
    socket_path = socket if socket is not None else env.get("GAZELLE_RUNTIME_SOCKET", "").strip()
    if workers is None:
        workers = env_int(env, "GAZELLE_RUNTIME_WORKERS", "--workers / GAZELLE_RUNTIME_WORKERS")
    if workers is None:
        workers = available_cpus() if cpus is None else cpus
    if workers < 1:
        raise ConfigError(f"--workers / GAZELLE_RUNTIME_WORKERS must be 1 or more, got {workers}")
    if socket_path:
        return Listen(bundle=Path(bundle_path), workers=workers, socket=_checked_socket(socket_path))
    if port is None:
        port = env_int(env, "GAZELLE_RUNTIME_PORT", "--port / GAZELLE_RUNTIME_PORT")
    port = DEFAULT_PORT if port is None else port
    if not 0 < port < 65536:
        raise ConfigError(f"--port / GAZELLE_RUNTIME_PORT must be between 1 and 65535, got {port}")
    host = host or env.get("GAZELLE_RUNTIME_HOST", "").strip() or DEFAULT_HOST
    return Listen(bundle=Path(bundle_path), workers=workers, host=host, port=port)


def _checked_socket(raw: str) -> Path:
    path = Path(raw)
    if len(os.fsencode(raw)) > MAX_SOCKET_PATH:
        raise ConfigError(f"--socket / GAZELLE_RUNTIME_SOCKET is {len(os.fsencode(raw))} bytes long; a unix "
                          f"socket path may have at most {MAX_SOCKET_PATH}: choose a shorter directory")
    if not path.parent.is_dir():
        raise ConfigError(f"--socket / GAZELLE_RUNTIME_SOCKET: directory {str(path.parent)!r} does not exist "
                          f"(the runtime does not create it: its permissions decide who may connect)")
    if path.exists() and not path.is_socket():
        raise ConfigError(f"--socket / GAZELLE_RUNTIME_SOCKET: {raw!r} exists and is not a socket")
    return path


def available_cpus(proc_cgroup: Path = Path("/proc/self/cgroup"),
                   cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, lowered by a cgroup CPU quota, at least 1.

    A container limited with ``--cpus 1.5`` still sees every core of the host in its affinity mask;
    only the quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) tells.
    The quota of every ancestor group counts, the tightest wins; a fractional quota rounds up.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota(proc_cgroup, cgroup_root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def _cgroup_quota(proc_cgroup: Path, root: Path) -> float | None:
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, group = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            quotas += _quotas_v2(root, group)
        elif "cpu" in controllers.split(","):
            quotas += _quotas_v1(root / controllers, group)
    return min(quotas) if quotas else None


def _ancestors(mount: Path, group: str) -> list[Path]:
    """The group's directory and each parent up to the mount; inside a cgroup namespace the group
    reads ``/`` and the mount itself is the container's group."""
    parts = [p for p in group.strip("/").split("/") if p and p != ".."]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _quotas_v2(root: Path, group: str) -> list[float]:
    found = []
    for directory in _ancestors(root, group):
        try:
            limit, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
        except OSError:
            continue
        if limit != "max" and period:
            try:
                found.append(int(limit) / int(period))
            except (ValueError, ZeroDivisionError):
                continue
    return found


def _quotas_v1(mount: Path, group: str) -> list[float]:
    found = []
    for directory in _ancestors(mount, group):
        try:
            limit = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if limit > 0 and period > 0:
            found.append(limit / period)
    return found
