"""pip, as the builders run it: streamed output, one sentence for a failure, wheels for another platform.

``install_target`` fills a directory with wheels for an image's python and platform
(``pip install --target`` with ``--only-binary=:all:``, ``--platform``, ``--python-version``,
``--implementation cp``, ``--abi``), without compiling ``.pyc`` files (they embed the time they were
written, which would make every build's layer different). pip reads its configuration (index, CA
bundle, proxies) from the environment and its config files, as for a person on this host.

Limits: linux wheels only (manylinux tags up to glibc 2.28, which every current python base image
exceeds); a package with no such wheel cannot be installed this way: the docker builder can build it.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Sequence

from gazelle.errors import BuildError
from gazelle.server.builders import Log
from gazelle.server.builders.venv import _Failed, _run, pip_failure

_MANYLINUX_GLIBC = range(28, 4, -1)
_LEGACY_ALIASES = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "ppc64le": "ppc64le", "s390x": "s390x"}
_NO_WHEEL = re.compile(r"(?:No matching distribution found for|Could not find a version that satisfies "
                       r"the requirement) ([^\s;]+)")


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
        _run([*cmd, *requirements], "pip could not install the bundle's requirements for the image", log)
    except _Failed as failed:
        text = "\n".join(failed.tail)
        match = _NO_WHEEL.search(text)
        if match:
            raise BuildError(f"no wheel of {match.group(1)} for python {python_minor} on linux/{architecture}: "
                             "the append builder installs wheels only",
                             hint="deploy with the docker builder (--builder docker), which can build it "
                                  "from source and install system packages",
                             detail=text) from None
        raise BuildError(pip_failure(failed.tail, python_minor) or failed.message,
                         hint="check the pins in the bundle's gazelle.json", detail=text) from None
