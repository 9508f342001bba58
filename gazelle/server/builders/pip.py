"""pip, as both builders run it: streamed output, one sentence for a failure, wheels for another platform.

- ``runtime_requirements``: what the runtime itself needs besides the bundle's pins (exact versions
  from this server's environment when the python matches, else gazelle's declared ranges).
- ``run``: a command whose output streams into the job's log; ``pip_failure`` reads its last lines.
- ``install_target`` (``AppendBuilder``'s dependency layer): a directory of wheels for an image's
  python and platform (``pip install --target`` with ``--only-binary=:all:``, ``--platform``,
  ``--python-version``, ``--implementation cp``, ``--abi``), without ``.pyc`` files (they embed the
  time they were written, which would make every build's layer different).
- ``locked``: the file lock that makes concurrent jobs build one cache entry once.

pip reads its configuration (index, CA bundle, proxies) from the environment and its config files,
exactly as for a person on this host. Limits: image wheels are linux only (manylinux tags up to glibc
2.28, which every current python base image meets); a package with no such wheel cannot be installed
for an image this way (the docker builder can build it). POSIX only (``fcntl`` locks).
"""
from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from collections import deque
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from gazelle.errors import BuildError
from gazelle.server.builders import Log

# What the runtime imports, when gazelle's own metadata cannot say (running from a source tree).
_RUNTIME_FALLBACK = ("cloudpickle", "packaging", "flask", "gunicorn", "orjson", "prometheus-client")
_RUNTIME_EXTRA = "runtime"
_PIP_TAIL = 40
# Inherited variables that would make the new interpreter see the server's packages.
_ISOLATING = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")


def runtime_requirements(*, exact: bool, exclude: Iterable[str] = ()) -> list[str]:
    """The runtime's own dependencies (and theirs), minus the names the bundle pins itself.

    ``exact``: pinned to the versions installed here (the closure, so nothing floats); otherwise the
    top-level requirements with the ranges gazelle declares, for pip to resolve for another python.
    """
    skip = {canonicalize_name(Requirement(p).name) for p in exclude}
    top = _declared_runtime()
    if not exact:
        return sorted(_without_marker(r) for r in top if canonicalize_name(r.name) not in skip)
    return pinned_closure([r.name for r in top], skip)


def pinned_closure(names: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
    """``NAME==VERSION`` of the distributions installed here that ``names`` need, theirs included."""
    skip = {canonicalize_name(n) for n in skip}
    pinned: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in pinned or name in skip:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue   # an optional dependency this server does without; the runtime will too
        pinned[name] = f"{dist.metadata['Name']}=={dist.version}"
        todo.extend(r.name for r in _active(dist.requires or [], extra=""))
    return sorted(pinned.values())


def _without_marker(req: Requirement) -> str:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def _declared_runtime() -> list[Requirement]:
    try:
        declared = metadata.requires("gazelle") or []
    except metadata.PackageNotFoundError:
        return [Requirement(name) for name in _RUNTIME_FALLBACK]
    return list(_active(declared, extra=_RUNTIME_EXTRA))


def _active(requirements: Iterable[str], *, extra: str) -> Iterator[Requirement]:
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or Marker.evaluate(req.marker, {"extra": extra}):
            yield req


def manifest_minor(manifest: Mapping[str, Any]) -> str:
    version = str(manifest.get("python") or "")
    match = re.match(r"^(\d+)\.(\d+)", version)
    if not match:
        raise BuildError(f"the bundle's python version {version!r} is not 'major.minor[.patch]'")
    return f"{match.group(1)}.{match.group(2)}"


def manifest_pins(manifest: Mapping[str, Any]) -> list[str]:
    pins = [str(p) for p in manifest.get("requirements") or []]
    for pin in pins:
        try:
            Requirement(pin)
        except InvalidRequirement:
            raise BuildError(f"the bundle's requirement {pin!r} is not a valid pin") from None
    return sorted(pins)

def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in _ISOLATING:
        env.pop(var, None)
    return env

def run(cmd: Sequence[str], failure: str, log: Log) -> list[str]:
    """Run ``cmd`` streaming its output to ``log``; raise BuildError(failure) if it fails."""
    tail: deque[str] = deque(maxlen=_PIP_TAIL)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", bufsize=1, env=clean_env())
    except OSError as err:
        raise BuildError(f"{failure}: {err.strerror or err}") from None
    assert proc.stdout is not None
    with proc:
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                tail.append(line)
                log(line)
    if proc.returncode != 0:
        raise Failed(proc.returncode, list(tail), failure)
    return list(tail)


class Failed(BuildError):
    def __init__(self, status: int, tail: list[str], failure: str) -> None:
        super().__init__(f"{failure} (exit status {status})", detail="\n".join(tail))
        self.status = status
        self.tail = tail

_NO_MATCH = re.compile(r"(?:No matching distribution found for|Could not find a version that satisfies "
                       r"the requirement) (\S+)")
_CONFLICT = re.compile(r"ERROR: (Cannot install .*? because these package versions have conflicting "
                       r"dependencies)")
_NO_BUILD = re.compile(r"(?:Failed building wheel for|Failed to build|Could not build wheels for) "
                       r"([A-Za-z0-9_.\-]+)")


def pip_failure(lines: Sequence[str], minor: str) -> str | None:
    """One sentence naming what pip could not install, read from its last lines; None if unclear."""
    text = "\n".join(lines)
    match = _NO_MATCH.search(text)
    if match:
        return f"pip could not install {match.group(1)}: no such release for python {minor} on this platform"
    match = _CONFLICT.search(text)
    if match:
        return f"pip could not install the bundle's requirements: {match.group(1)}"
    match = _NO_BUILD.search(text)
    if match:
        return f"pip could not build {match.group(1)} from source"
    return None


@contextmanager
def locked(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a cache entry's lock file); ``on_wait`` runs if another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_MANYLINUX_GLIBC = range(28, 4, -1)
_LEGACY_ALIASES = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "ppc64le": "ppc64le", "s390x": "s390x"}


def platform_tags(architecture: str) -> list[str]:
    """pip ``--platform`` values for a linux image of that (OCI) architecture, newest glibc first."""
    machine = _ARCH.get(architecture)
    if machine is None:
        raise BuildError(f"the base image's architecture {architecture!r} is not one gazelle can install "
                         f"wheels for; valid: {', '.join(sorted(_ARCH))}")
    tags = []
    for minor in _MANYLINUX_GLIBC:
        tags.append(f"manylinux_2_{minor}_{machine}")
        if minor in _LEGACY_ALIASES:
            tags.append(f"{_LEGACY_ALIASES[minor]}_{machine}")
    return tags


def install_target(target: Path, requirements: Sequence[str], *, python_minor: str, architecture: str,
                   log: Log) -> None:
    """Install ``requirements`` (exact pins) into ``target`` for cpython ``python_minor`` on linux."""
    major, minor = python_minor.split(".")
    cmd = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
           "--progress-bar", "off", "--no-compile", "--target", str(target), "--only-binary=:all:",
           "--implementation", "cp", "--python-version", python_minor, "--abi", f"cp{major}{minor}"]
    for tag in platform_tags(architecture):
        cmd += ["--platform", tag]
    try:
        run([*cmd, *requirements], "pip could not install the bundle's requirements for the image", log)
    except Failed as failed:
        text = "\n".join(failed.tail)
        match = _NO_MATCH.search(text)
        if match:
            raise BuildError(f"no wheel of {match.group(1)} for python {python_minor} on linux/{architecture}: "
                             "the append builder installs wheels only",
                             hint="deploy with the docker builder (--builder docker), which can build it "
                                  "from source and install system packages",
                             detail=text) from None
        raise BuildError(pip_failure(failed.tail, python_minor) or failed.message,
                         hint="check the pins in the bundle's gazelle.json", detail=text) from None
