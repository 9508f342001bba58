"""``AppendBuilder``: a model image without a daemon, as layers appended to a python base image.

    base (resolved by digest: manifest and config only)
    + dependencies  /opt/gazelle/deps      pip --target of the bundle's pins + the runtime's own
    + runtime       /opt/gazelle/runtime   gazelle's runtime modules (nothing of client or server)
    + model         /opt/gazelle/model/bundle.tar

The build never downloads the base's layers: the push mounts them from the base's repository when
it is in the same registry, or copies them once from the base's registry (a HEAD skips them on
every later push). The base is chosen by the bundle's python major.minor from ``base_images``
(``GAZELLE_BASE_IMAGES``); with none configured, ``python:{major}.{minor}-slim`` (Docker Hub).
The dependency layer is built for the base's architecture and python and cached in ``cache_dir`` by
the hash of the requirements, python and platform tags, so a warm build runs no pip at all and its
digest never changes. The image runs ``python3 -m gazelle.runtime`` as user 65532 (no name
needed), serving the bundle on ``$GAZELLE_RUNTIME_PORT`` (8080) on every interface; ``PYTHONPATH``
puts the runtime and the dependencies before the base's own packages. ``build(..., version=N)``
writes N into the ``gazelle.version`` label and ``GAZELLE_MODEL_VERSION`` (default 0: a target
sets the version it runs in the container's environment).

Limits: the base image must provide ``python3`` of the bundle's major.minor on ``PATH`` (its config's
``PYTHON_VERSION``, when set, must agree); only wheels are installed (``pip.install_target``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import gazelle
from gazelle.errors import BuildError, ConfigError
from gazelle.server import oci
from gazelle.server.builders import Log
from gazelle.server.builders.pip import (install_target, locked, manifest_minor, manifest_pins, platform_tags,
                                         runtime_requirements)
from gazelle.server.registry.push import OCIRegistry

DEFAULT_BASE = "python:{major}.{minor}-slim"
ROOT = "/opt/gazelle"
DEPS = f"{ROOT}/deps"
RUNTIME = f"{ROOT}/runtime"
BUNDLE = f"{ROOT}/model/bundle.tar"
USER = "65532:65532"
PORT = 8080
# What the runtime imports when it serves; the whole gazelle.runtime package is added to it.
_RUNTIME_ENTRY = ("gazelle.cli", "gazelle.runtime.serve", "gazelle.runtime.app", "gazelle.runtime.loader")
_LIST_MODULES = ("import importlib, json, sys; [importlib.import_module(m) for m in sys.argv[1:]]; "
                 "print(json.dumps(sorted(getattr(m, '__file__', None) or '' for n, m in "
                 "list(sys.modules.items()) if n == 'gazelle' or n.startswith('gazelle.'))))")


class AppendBuilder:
    """See the module docstring. The constructor does no I/O."""

    def __init__(self, registry: OCIRegistry, base_images: Mapping[str, str], cache_dir: Path) -> None:
        self.registry = registry
        self.base_images = dict(base_images)
        self.cache_dir = Path(cache_dir)

    def close(self) -> None:
        self.registry.close()

    def base_for(self, minor: str) -> str:
        return base_image_for(minor, self.base_images)

    def build(self, bundle_path: Path, manifest: Mapping[str, Any], log: Log, *, version: int = 0) -> oci.Image:
        minor = manifest_minor(manifest)
        base_name = self.base_for(minor)
        log(f"resolving the base image {base_name}")
        name, base = self.registry.resolve(base_name)
        log(f"base image {name.repository_name}@{name.reference} ({len(base.layers)} layers, "
            f"{base.size} bytes, {'/'.join(base.platform)})")
        _check_python(base, minor, base_name)
        deps = self.dependency_layer(manifest_pins(manifest), minor, base.platform[1], log)
        runtime = runtime_layer()
        bundle = bundle_path.read_bytes()
        digest = "sha256:" + hashlib.sha256(bundle).hexdigest()
        model = oci.layer_from_files({BUNDLE: bundle}, created_by=f"gazelle: bundle {digest}")
        image = oci.append(base, deps, runtime, model)
        model_name = str(manifest.get("name") or "model")
        image = oci.configure(
            image, entrypoint=["python3", "-m", "gazelle.runtime"], user=USER, working_dir=ROOT,
            exposed_ports=[f"{PORT}/tcp"],
            env={"PYTHONPATH": f"{RUNTIME}:{DEPS}", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                 "HOME": "/tmp", "GAZELLE_RUNTIME_BUNDLE": BUNDLE, "GAZELLE_RUNTIME_HOST": "0.0.0.0",
                 "GAZELLE_RUNTIME_PORT": str(PORT), "GAZELLE_MODEL_VERSION": str(version)},
            labels={"org.opencontainers.image.title": model_name,
                    "org.opencontainers.image.version": str(version),
                    "org.opencontainers.image.created": oci.EPOCH,
                    "org.opencontainers.image.description": f"gazelle model {model_name}",
                    "org.opencontainers.image.base.name": base_name,
                    "org.opencontainers.image.base.digest": name.reference,
                    "gazelle.model": model_name, "gazelle.version": str(version),
                    "gazelle.bundle-digest": digest})
        log(f"image {image.digest}: {len(image.layers)} layers, {image.size} bytes "
            f"(model layer {model.size} bytes)")
        return image

    def dependency_layer(self, pins: list[str], minor: str, architecture: str, log: Log) -> oci.Layer:
        """The layer of the pins plus the runtime's requirements, from the cache when it is there."""
        own = f"{sys.version_info.major}.{sys.version_info.minor}"
        requirements = [*pins, *runtime_requirements(exact=(minor == own), exclude=pins)]
        tags = platform_tags(architecture)
        key = hashlib.sha256(json.dumps([minor, architecture, tags, sorted(requirements)]).encode()).hexdigest()[:16]
        layers = self.cache_dir / "layers"
        blob, meta = layers / f"deps-{key}.tar.gz", layers / f"deps-{key}.json"
        with locked(layers / f".deps-{key}.lock", lambda: log(
                f"waiting for another job that is building the dependency layer {key}")):
            if not meta.exists():
                self._build_dependencies(requirements, minor, architecture, blob, meta, log)
            else:
                log(f"reusing the dependency layer {key} ({len(requirements)} packages, no pip)")
        described = json.loads(meta.read_text())
        return oci.Layer(described["digest"], described["size"], described["diff_id"],
                         created_by=described["created_by"], path=blob)

    def _build_dependencies(self, requirements: list[str], minor: str, architecture: str, blob: Path, meta: Path,
                            log: Log) -> None:
        log(f"installing {len(requirements)} packages for python {minor} on linux/{architecture}")
        blob.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".deps-", dir=blob.parent))
        try:
            install_target(work / "site", requirements, python_minor=minor, architecture=architecture, log=log)
            created_by = f"gazelle: pip install --target {DEPS} " + " ".join(sorted(requirements))
            layer = oci.layer_from_tree(work / "site", DEPS, created_by=created_by[:4000], out=work / "layer.tar.gz")
            os.replace(work / "layer.tar.gz", blob)
            # The description is written last: it is what says the cached layer is complete.
            (work / "layer.json").write_text(json.dumps({"digest": layer.digest, "size": layer.size,
                                                         "diff_id": layer.diff_id, "created_by": layer.created_by}))
            os.replace(work / "layer.json", meta)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"dependency layer {layer.digest} ({layer.size} bytes) cached")


def _check_python(base: oci.Image, minor: str, base_name: str) -> None:
    declared = base.env.get("PYTHON_VERSION", "")
    if declared and not re.match(rf"^{re.escape(minor)}(\.|$)", declared):
        raise BuildError(f"the base image {base_name} has python {declared}, the bundle needs {minor}",
                         hint="map the bundle's python to a matching image in GAZELLE_BASE_IMAGES")


def base_image_for(minor: str, base_images: Mapping[str, str]) -> str:
    """The base image for python ``minor`` (``GAZELLE_BASE_IMAGES``, shared by both image builders)."""
    if not base_images:
        major, _, rest = minor.partition(".")
        return DEFAULT_BASE.format(major=major, minor=rest)
    if minor not in base_images:
        raise ConfigError(f"no base image for python {minor} in GAZELLE_BASE_IMAGES "
                          f"(it has {', '.join(sorted(base_images))})",
                          hint=f'add "{minor}": "<image>" to GAZELLE_BASE_IMAGES')
    return base_images[minor]


def runtime_layer() -> oci.Layer:
    """gazelle's runtime modules (and the package data of ``gazelle.runtime``) under /opt/gazelle/runtime."""
    root = Path(gazelle.__file__).resolve().parent
    files: dict[str, oci.FileSource] = {}
    for path in runtime_files():
        files[f"{RUNTIME}/gazelle/{path.relative_to(root).as_posix()}"] = path
    return oci.layer_from_files(files, created_by="gazelle: runtime " + gazelle.__version__)


@functools.lru_cache(maxsize=1)
def runtime_files() -> tuple[Path, ...]:
    """The files of every gazelle module the runtime imports when it serves (found by importing its
    entry points in a fresh interpreter), plus everything in the ``gazelle.runtime`` package."""
    root = Path(gazelle.__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSTARTUP", "PYTHONHOME")}
    # gazelle first; the rest of PYTHONPATH stays (a server whose dependencies are found through it)
    env["PYTHONPATH"] = os.pathsep.join([str(root.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    got = subprocess.run([sys.executable, "-c", _LIST_MODULES, *_RUNTIME_ENTRY], capture_output=True, text=True,
                         env=env, timeout=120)
    if got.returncode != 0:
        raise BuildError("the runtime's modules cannot be imported here", detail=got.stderr[-4000:])
    found = {Path(f).resolve() for f in json.loads(got.stdout.strip().splitlines()[-1]) if f}
    found |= {p.resolve() for p in (root / "runtime").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    outside = sorted(str(p) for p in found if root not in p.parents)
    if outside:
        raise BuildError("the runtime imports gazelle modules from outside the package: " + ", ".join(outside))
    return tuple(sorted(p for p in found if p.suffix != ".pyc"))
