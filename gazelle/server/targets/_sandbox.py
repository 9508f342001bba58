"""How the local target confines a runtime: the model's code sees its own bundle and environment.

A model is arbitrary code, deployed by anyone with a deploy token. Run as the server's user, with the
data directory in reach, it could read the admin token, rewrite ``gazelle.db`` or other models'
bundles, or read the server's registry and cluster credentials. So each runtime runs under Debian's
``bubblewrap`` (``bwrap``) where it works:

- a mount namespace with the root filesystem read-only and these hidden behind empty tmpfs mounts:
  the server's data directory, the server user's home directory (``~/.docker``, ``~/.kube``, the
  client's token), ``/tmp``, ``/run`` (service sockets such as a Docker engine's) and ``/dev/shm``;
  then, read-only, exactly what the runtime needs from inside them (its interpreter and environment,
  the bundle, gazelle's own package) and, writable, the directory of its own socket;
- its own pid, IPC and UTS namespaces (it cannot see or signal the server, nor read
  ``/proc/<server>/environ`` or ``/proc/<server>/root``);
- when the server runs as root, the runtime drops to the unprivileged user ``nobody`` (``setpriv``,
  with no capabilities, no supplementary groups and ``no_new_privs``), so root-owned files left visible
  (``/etc/shadow``, a kubeconfig in ``/etc``) and root-only sockets stay closed to it. Otherwise it keeps
  the server's user inside a user namespace, with every capability dropped.

The network is not confined: a model may call services (an API, a database) as it would from the
notebook. Where ``bwrap`` is missing or cannot create namespaces here, ``probe`` says so and runtimes
run unconfined; the server warns at start that deploy tokens are then as powerful as its own user.
"""
from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

_PROBE_TIMEOUT = 20.0
# Hidden for every runtime, whatever the data directory: sockets of services, scratch shared with others.
_ALWAYS_HIDDEN = ("/tmp", "/run", "/dev/shm")


@dataclass(frozen=True)
class Sandbox:
    """``bwrap`` is None when runtimes cannot be confined here; ``reason`` says why."""

    bwrap: str | None
    setpriv: str | None = None
    user: tuple[int, int] | None = None    # (uid, gid) the runtime runs as; None: the server's own
    reason: str = ""

    @property
    def confined(self) -> bool:
        return self.bwrap is not None

    def warning(self) -> str | None:
        if self.confined:
            return None
        return (f"model runtimes run unconfined ({self.reason}): a model's code can read and change "
                "everything the server's user can, so anyone with a deploy token is as powerful as that "
                "user; install bubblewrap (apt-get install bubblewrap) to confine them")

    def wrap(self, cmd: Sequence[str], *, hide: Sequence[Path], read_only: Sequence[Path],
             writable: Sequence[Path]) -> list[str]:
        """``cmd`` run inside the sandbox (unchanged when unconfined); see the module docstring."""
        if self.bwrap is None:
            return list(cmd)
        hidden = _outermost([Path(p) for p in _ALWAYS_HIDDEN] + [Path(p) for p in hide])
        args = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for path in hidden:
            args += ["--perms", "1777" if str(path) in _ALWAYS_HIDDEN else "0755", "--tmpfs", str(path)]
        made: set[Path] = set(hidden)
        for flag, paths in (("--ro-bind", read_only), ("--bind", writable)):
            for path in _unique(paths):
                # Only what lies inside a hidden directory needs binding back; never a hidden
                # directory itself or one of its parents, which would undo the hiding.
                if not (path.exists() and _inside_any(path, hidden)) or _covers_any(path, hidden):
                    continue
                # bwrap would copy the modes of the hidden originals onto the directories it makes on
                # the way (a 0700 parent would lock the runtime's user out): make them traversable.
                for parent in reversed(path.parents):
                    if parent not in made and _inside_any(parent, hidden):
                        args += ["--perms", "0755", "--dir", str(parent)]
                        made.add(parent)
                args += [flag, str(path), str(path)]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--chdir", "/tmp"]
        if self.user is None:
            return [*args, "--cap-drop", "ALL", "--", *cmd]
        uid, gid = self.user
        assert self.setpriv is not None
        return [*args, "--", self.setpriv, "--reuid", str(uid), "--regid", str(gid), "--clear-groups",
                "--inh-caps", "-all", "--bounding-set", "-all", "--no-new-privs", "--", *cmd]


@functools.lru_cache(maxsize=None)
def probe() -> Sandbox:
    """The sandbox this host allows (tried once per process: it starts a process)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Sandbox(None, reason="bubblewrap (bwrap) is not installed")
    user: tuple[int, int] | None = None
    setpriv: str | None = None
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            return Sandbox(None, reason="the server runs as root and setpriv (util-linux) is missing")
        try:
            entry = pwd.getpwnam("nobody")
            user = (entry.pw_uid, entry.pw_gid)
        except KeyError:
            user = (65534, 65534)
    candidate = Sandbox(bwrap, setpriv, user)
    trial = candidate.wrap(["/bin/true"], hide=[], read_only=[], writable=[])
    try:
        done = subprocess.run(trial, capture_output=True, text=True, timeout=_PROBE_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return Sandbox(None, reason=f"bwrap could not be started: {err}")
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return Sandbox(None, reason=f"bwrap cannot create namespaces here: {why}")
    return candidate


@functools.lru_cache(maxsize=64)
def _python_paths(python: str, pythonpath: str) -> tuple[Path, ...]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    code = "import sys; print('\\n'.join([sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]))"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    lines = done.stdout.splitlines() if done.returncode == 0 else []
    return tuple(Path(line) for line in lines if line.startswith("/"))


def python_paths(python: str, env: Mapping[str, str]) -> list[Path]:
    """Every directory ``python`` reads its standard library and packages from, links resolved too."""
    found = [Path(python).parent.parent, Path(os.path.realpath(python)).parent.parent,
             *_python_paths(python, env.get("PYTHONPATH", ""))]
    return [*found, *(Path(os.path.realpath(p)) for p in found)]


def _unique(paths: Sequence[Path]) -> list[Path]:
    return sorted({Path(os.path.abspath(p)) for p in paths}, key=lambda p: (len(p.parts), str(p)))


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """Without the paths that lie inside another one (a tmpfs over the parent hides them already)."""
    ordered = _unique(paths)
    return [p for i, p in enumerate(ordered) if not any(p.is_relative_to(q) for q in ordered[:i] if q != p)]


def _inside_any(path: Path, dirs: Sequence[Path]) -> bool:
    return any(path.is_relative_to(d) for d in dirs)


def _covers_any(path: Path, dirs: Sequence[Path]) -> bool:
    return any(d.is_relative_to(path) for d in dirs)
