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

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import gazelle
from gazelle.errors import BuildError
from gazelle.server.artifacts import LocalEnv
from gazelle.server.builders import Log
from gazelle.server.builders.pip import (Failed, clean_env, locked, manifest_minor, manifest_pins, pip_failure,
                                         run, runtime_requirements)

__all__ = ["VenvBuilder", "env_key", "pip_failure", "runtime_requirements"]



class VenvBuilder:
    """Builder for the local target (see the module docstring). The constructor does no I/O."""

    def __init__(self, data_dir: Path, *, python: str | None = None) -> None:
        self.envs_dir = Path(data_dir) / "envs"
        self.python = python or sys.executable

    def build(self, bundle_path: Path, manifest: Mapping[str, Any], log: Log, *, version: int = 0) -> LocalEnv:
        minor = manifest_minor(manifest)
        pins = manifest_pins(manifest)
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
        with locked(self.envs_dir / f".{env_dir.name}.lock", lambda: log(
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
            run([python, "-m", "venv", str(tmp)], "could not create a virtualenv", log)
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


def _find_python(minor: str, own_minor: str) -> str:
    """``python{minor}`` on PATH, if it runs and is that version (version-manager shims may not)."""
    name = f"python{minor}"
    path = shutil.which(name)
    if path:
        try:
            got = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30, env=clean_env())
            if got.returncode == 0 and got.stdout.strip() == minor:
                return path
        except (OSError, subprocess.TimeoutExpired):
            pass
    raise BuildError(f"bundle needs python {minor}; this server has {own_minor} and no {name} on PATH",
                      hint=f"install python {minor}, or deploy from a notebook running python {own_minor}")


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
                         capture_output=True, text=True, env=clean_env(), timeout=60)
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


def _pip_install(venv_python: str, requirements: Sequence[str], minor: str, log: Log) -> None:
    # The bundle's pins come first, so an impossible one fails before anything is downloaded.
    cmd = [venv_python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
           "--progress-bar", "off", "--prefer-binary", *requirements]
    try:
        run(cmd, "pip could not install the bundle's requirements", log)
    except Failed as failed:
        raise BuildError(pip_failure(failed.tail, minor) or failed.message,
                          hint="check the pins in the bundle's gazelle.json, or pass requirements=[...]",
                          detail="\n".join(failed.tail)) from None


_VERIFY = ("import json, sys; from gazelle.envspec import differences; "
           "print(json.dumps(differences(json.load(sys.stdin))))")


def _verify(venv_python: str, manifest: Mapping[str, Any]) -> None:
    """The new environment must pass the runtime's own environment check before it is kept."""
    got = subprocess.run([venv_python, "-c", _VERIFY], input=json.dumps(dict(manifest)), capture_output=True,
                         text=True, env=clean_env(), timeout=120)
    if got.returncode != 0:
        raise BuildError("the new environment cannot import gazelle", detail=got.stderr[-4000:])
    remaining = [str(d) for d in json.loads(got.stdout.strip().splitlines()[-1])]
    if remaining:
        raise BuildError("the new environment still differs from the bundle's: " + "; ".join(remaining),
                          detail="\n".join(remaining))


