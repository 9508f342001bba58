"""``VenvBuilder``: an environment on this host in which a bundle's runtime can start.

The local target runs each model version as a process on this host. The builder picks the
interpreter for it:

- the server's own interpreter, when it already satisfies the bundle (same python major.minor and
  every pin installed at exactly that version, as ``gazelle.envspec.differences`` says);
- otherwise a virtualenv at ``{data_dir}/envs/<key>``, where ``key`` is the first 16 hex digits of
  the sha256 of the python major.minor and the sorted pins (the bundle's and the runtime's own).
  Bundles with the same pins share one environment.

A virtualenv holds the bundle's exact pins plus the runtime's own dependencies (flask, gunicorn,
orjson, ...) at the versions installed in the server, so the runtime behaves as it does in the
server. ``gazelle`` itself is not installed into it: a ``.pth`` file makes the server's own
``gazelle`` package importable, so the runtime code is always the server's.

Limits:

- An environment is built under ``envs/.build-*`` and renamed into place when complete, so a crashed
  build never leaves a half environment that looks ready; a file lock per key makes concurrent jobs
  needing the same environment build it once. Because of the rename, console scripts inside the
  environment (``bin/pip`` ...) carry the build path in their shebang: only ``bin/python -m ...``
  is used.
- A bundle made on another python minor needs ``python{major}.{minor}`` on ``PATH``; its runtime
  dependencies are then left to pip within their declared ranges (the server's versions may not
  exist for that python).
- pip reads its configuration (index, CA bundle, proxies) from the environment and its config files,
  exactly as for a person on this host.
- POSIX only (``fcntl`` locks).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import deque
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

import gazelle
from gazelle.errors import BuildError
from gazelle.server.artifacts import LocalEnv
from gazelle.server.builders import Log

# What the runtime imports, when gazelle's own metadata cannot say (running from a source tree).
_RUNTIME_FALLBACK = ("cloudpickle", "packaging", "flask", "gunicorn", "orjson", "prometheus-client")
_RUNTIME_EXTRA = "runtime"
_PIP_TAIL = 40
# Inherited variables that would make the new interpreter see the server's packages.
_ISOLATING = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")


class VenvBuilder:
    """Builder for the local target (see the module docstring). The constructor does no I/O."""

    def __init__(self, data_dir: Path, *, python: str | None = None) -> None:
        self.envs_dir = Path(data_dir) / "envs"
        self.python = python or sys.executable

    def build(self, bundle_path: Path, manifest: Mapping[str, Any], log: Log) -> LocalEnv:
        minor = _minor(manifest)
        pins = _pins(manifest)
        own_minor = f"{sys.version_info.major}.{sys.version_info.minor}"
        if minor == own_minor and self.python == sys.executable:
            from gazelle.envspec import differences

            missing = differences(manifest)
            if not missing:
                log(f"the server's own python {own_minor} already has the bundle's {len(pins)} pins")
                return LocalEnv(self.python, bundle_path)
            log(f"the server's environment differs from the bundle's in {len(missing)} place(s): "
                + "; ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        python = self.python if minor == own_minor else _find_python(minor, own_minor)
        runtime = runtime_requirements(exact=(minor == own_minor), exclude=pins)
        env_dir = self.envs_dir / env_key(minor, [*pins, *runtime])
        with _locked(self.envs_dir / f".{env_dir.name}.lock", lambda: log(
                f"waiting for another job that is building the environment {env_dir.name}")):
            if (env_dir / "bin" / "python").exists():
                log(f"reusing the environment {env_dir.name} (python {minor}, {len(pins)} pins)")
                _point_at_gazelle(env_dir)
            else:
                self._create(env_dir, python, minor, pins, runtime, manifest, log)
        return LocalEnv(str(env_dir / "bin" / "python"), bundle_path)

    def close(self) -> None:
        """Nothing to release: every build runs and ends within ``build``."""

    def _create(self, env_dir: Path, python: str, minor: str, pins: Sequence[str],
                runtime: Sequence[str], manifest: Mapping[str, Any], log: Log) -> None:
        """Build the environment under a temporary name, check it, rename it into place."""
        for stale in self.envs_dir.glob(f".build-{env_dir.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)   # a crashed build; we hold the lock
        tmp = self.envs_dir / f".build-{env_dir.name}-{uuid.uuid4().hex[:8]}"
        log(f"creating the environment {env_dir.name}: python {minor}, {len(pins)} pins "
            f"+ {len(runtime)} runtime packages")
        try:
            _run([python, "-m", "venv", str(tmp)], "could not create a virtualenv", log)
            venv_python = str(tmp / "bin" / "python")
            _link_gazelle(tmp, venv_python)
            _pip_install(venv_python, [*pins, *runtime], minor, log)
            _verify(venv_python, manifest)
            os.rename(tmp, env_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log(f"environment {env_dir.name} ready")


def env_key(minor: str, pins: Iterable[str]) -> str:
    text = "\n".join([minor, *sorted(pins)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def runtime_requirements(*, exact: bool, exclude: Iterable[str] = ()) -> list[str]:
    """The runtime's own dependencies (and theirs), minus the names the bundle pins itself.

    ``exact``: pinned to the versions installed here (the closure, so nothing floats); otherwise the
    top-level requirements with the ranges gazelle declares, for pip to resolve for another python.
    """
    skip = {canonicalize_name(Requirement(p).name) for p in exclude}
    top = _declared_runtime()
    if not exact:
        return sorted(_without_marker(r) for r in top if canonicalize_name(r.name) not in skip)
    pinned: dict[str, str] = {}
    todo = [r.name for r in top]
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


def _minor(manifest: Mapping[str, Any]) -> str:
    version = str(manifest.get("python") or "")
    match = re.match(r"^(\d+)\.(\d+)", version)
    if not match:
        raise BuildError(f"the bundle's python version {version!r} is not 'major.minor[.patch]'")
    return f"{match.group(1)}.{match.group(2)}"


def _pins(manifest: Mapping[str, Any]) -> list[str]:
    pins = [str(p) for p in manifest.get("requirements") or []]
    for pin in pins:
        try:
            Requirement(pin)
        except InvalidRequirement:
            raise BuildError(f"the bundle's requirement {pin!r} is not a valid pin") from None
    return sorted(pins)


def _find_python(minor: str, own_minor: str) -> str:
    """``python{minor}`` on PATH, if it runs and is that version (version-manager shims may not)."""
    name = f"python{minor}"
    path = shutil.which(name)
    if path:
        try:
            got = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30, env=_clean_env())
            if got.returncode == 0 and got.stdout.strip() == minor:
                return path
        except (OSError, subprocess.TimeoutExpired):
            pass
    raise BuildError(f"bundle needs python {minor}; this server has {own_minor} and no {name} on PATH",
                      hint=f"install python {minor}, or deploy from a notebook running python {own_minor}")


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in _ISOLATING:
        env.pop(var, None)
    return env


def _gazelle_root() -> Path:
    """The server's ``gazelle`` package directory."""
    return Path(gazelle.__file__).resolve().parent


def _link_gazelle(venv: Path, venv_python: str) -> None:
    """Make the server's ``gazelle`` importable in the venv, and nothing else of the server.

    The ``.pth`` points at a directory holding only a link to the package, not at the directory
    that contains it: for an installed server that would be its whole site-packages, whose
    packages would then shadow the bundle's missing ones. The ``.pth`` line is relative to
    site-packages, so it stays right when the environment is renamed into place.
    """
    shim = venv / "gazelle-path"
    shim.mkdir()
    (shim / "gazelle").symlink_to(_gazelle_root(), target_is_directory=True)
    got = subprocess.run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, env=_clean_env(), timeout=60)
    if got.returncode != 0:
        raise BuildError("the new virtualenv's python does not start", detail=got.stderr[-4000:])
    site = Path(got.stdout.strip())
    (site / "gazelle-server.pth").write_text(os.path.relpath(shim, site) + "\n")


def _point_at_gazelle(venv: Path) -> None:
    """Keep a reused environment's link on this server's ``gazelle`` (the server may have moved)."""
    link = venv / "gazelle-path" / "gazelle"
    if link.resolve() != _gazelle_root():
        fresh = link.with_name(f".gazelle-{uuid.uuid4().hex[:8]}")
        fresh.symlink_to(_gazelle_root(), target_is_directory=True)
        os.replace(fresh, link)


def _run(cmd: Sequence[str], failure: str, log: Log) -> list[str]:
    """Run ``cmd`` streaming its output to ``log``; raise BuildError(failure) if it fails."""
    tail: deque[str] = deque(maxlen=_PIP_TAIL)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", bufsize=1, env=_clean_env())
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
        raise _Failed(proc.returncode, list(tail), failure)
    return list(tail)


class _Failed(BuildError):
    def __init__(self, status: int, tail: list[str], failure: str) -> None:
        super().__init__(f"{failure} (exit status {status})", detail="\n".join(tail))
        self.status = status
        self.tail = tail


def _pip_install(venv_python: str, requirements: Sequence[str], minor: str, log: Log) -> None:
    # The bundle's pins come first, so an impossible one fails before anything is downloaded.
    cmd = [venv_python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
           "--progress-bar", "off", "--prefer-binary", *requirements]
    try:
        _run(cmd, "pip could not install the bundle's requirements", log)
    except _Failed as failed:
        raise BuildError(pip_failure(failed.tail, minor) or failed.message,
                          hint="check the pins in the bundle's gazelle.json, or pass requirements=[...]",
                          detail="\n".join(failed.tail)) from None


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


_VERIFY = ("import json, sys; from gazelle.envspec import differences; "
           "print(json.dumps(differences(json.load(sys.stdin))))")


def _verify(venv_python: str, manifest: Mapping[str, Any]) -> None:
    """The new environment must pass the runtime's own environment check before it is kept."""
    got = subprocess.run([venv_python, "-c", _VERIFY], input=json.dumps(dict(manifest)), capture_output=True,
                         text=True, env=_clean_env(), timeout=120)
    if got.returncode != 0:
        raise BuildError("the new environment cannot import gazelle", detail=got.stderr[-4000:])
    remaining = [str(d) for d in json.loads(got.stdout.strip().splitlines()[-1])]
    if remaining:
        raise BuildError("the new environment still differs from the bundle's: " + "; ".join(remaining),
                          detail="\n".join(remaining))


@contextmanager
def _locked(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
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
