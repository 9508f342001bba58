"""The build server's own image, made by ``AppendBuilder`` the way a model's image is made.

    base (a python image, by digest)
    + dependencies  /opt/gazelle/deps   the server's requirements (extras ``server`` and ``postgres``),
                                        pinned to the versions installed here
    + server        /opt/gazelle/app    the whole gazelle package
    entrypoint ``python3 -m gazelle.cli server``, user 10001:10001 (the chart's ``runAsUser``)

``python -m gazelle.server.selfimage --base IMAGE --push HOST[:PORT]/REPOSITORY[:TAG]`` builds it and
prints the digest reference as the last line on stdout (progress goes to stderr). The dependency layer
is cached under ``--cache-dir`` (default ``$GAZELLE_DATA_DIR/cache``, ``~/.gazelle/cache`` when unset)
by the hash of the pins, the python and the platform, and every layer is written deterministically,
so a second run with the same sources runs no pip and uploads no layer. Registry credentials and
plain-http registries come from the same settings as the server's (``GAZELLE_REGISTRY_USER`` /
``_PASSWORD``, ``GAZELLE_REGISTRY_INSECURE``, docker's ``config.json``).

Limits: the base's python must have the major.minor of the interpreter running this (the pins are this
environment's) and must provide ``pip`` (the server runs it to build the models' dependency layers).
"""
from __future__ import annotations

import argparse
import configparser
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable

import gazelle
from gazelle import errors
from gazelle.server import oci
from gazelle.server.builders import Log
from gazelle.server.builders.append import DEPS, ROOT, AppendBuilder
from gazelle.server.builders.pip import _active, pinned_closure

APP = f"{ROOT}/app"
USER = "10001:10001"
PORT = 8000
EXTRAS = ("server", "postgres")
# The names of the extras above, when gazelle's own metadata cannot say (running from a source tree).
_FALLBACK = ("cloudpickle", "packaging", "flask", "gunicorn", "orjson", "prometheus-client", "httpx",
             "sqlalchemy", "docker", "kubernetes", "psycopg", "psycopg-binary")


def declared_requirements() -> list[str]:
    """gazelle's requirements with their extras markers: from ``setup.cfg`` beside the package when it
    runs from a source tree (that tree is what goes into the image, and an installed copy's metadata
    may be older), else from the installed metadata."""
    setup_cfg = Path(gazelle.__file__).resolve().parent.parent / "setup.cfg"
    if setup_cfg.is_file():
        cfg = configparser.ConfigParser(interpolation=None)
        cfg.read(setup_cfg)
        if cfg.has_section("options.extras_require"):
            lines = [r.strip() for r in cfg.get("options", "install_requires", fallback="").split("\n") if r.strip()]
            for extra in EXTRAS:
                lines += [f'{r.strip()}; extra == "{extra}"'
                          for r in cfg.get("options.extras_require", extra, fallback="").split("\n") if r.strip()]
            return lines
    try:
        return metadata.requires("gazelle") or []
    except metadata.PackageNotFoundError:
        return list(_FALLBACK)


def server_requirements() -> list[str]:
    """The server's requirements (and theirs) pinned to this environment's versions."""
    declared = declared_requirements()
    names: list[str] = []
    for extra in ("", *EXTRAS):
        for req in _active(declared, extra=extra):
            names.append(req.name)
            names += _extra_names(req.name, req.extras)
    return pinned_closure(names)


def _extra_names(name: str, extras: Iterable[str]) -> list[str]:
    try:
        requires = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []
    return [r.name for extra in extras for r in _active(requires, extra=extra) if r.marker is not None]


def package_layer() -> oci.Layer:
    """Every file of the gazelle package (no bytecode) under /opt/gazelle/app."""
    root = Path(gazelle.__file__).resolve().parent
    files: dict[str, oci.FileSource] = {
        f"{APP}/gazelle/{p.relative_to(root).as_posix()}": p for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    return oci.layer_from_files(files, created_by="gazelle: server " + gazelle.__version__)


def build(builder: AppendBuilder, base_name: str, log: Log) -> oci.Image:
    """The server image on ``base_name``; no push."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    name, base = builder.registry.resolve(base_name)
    log(f"base image {name.repository_name}@{name.reference}")
    deps = builder.dependency_layer(server_requirements(), minor, base.platform[1], log)
    image = oci.append(base, deps, package_layer())
    return oci.configure(
        image, entrypoint=["python3", "-m", "gazelle.cli", "server"], user=USER, working_dir="/tmp",
        exposed_ports=[f"{PORT}/tcp"],
        env={"PYTHONPATH": f"{APP}:{DEPS}", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
             "HOME": "/tmp"},
        labels={"org.opencontainers.image.title": "gazelle-server",
                "org.opencontainers.image.version": gazelle.__version__,
                "org.opencontainers.image.created": oci.EPOCH,
                "org.opencontainers.image.base.name": base_name,
                "org.opencontainers.image.base.digest": name.reference})


def main(argv: list[str] | None = None) -> int:
    from gazelle.server.registry import open_registry
    from gazelle.server.settings import Settings

    p = argparse.ArgumentParser(prog="python -m gazelle.server.selfimage", description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="python base image, e.g. python:3.11-slim")
    p.add_argument("--push", required=True, metavar="HOST[:PORT]/REPOSITORY[:TAG]",
                   help="where to push the image (default tag: gazelle's version)")
    p.add_argument("--cache-dir", default=None, help="dependency layer cache (default $GAZELLE_DATA_DIR/cache)")
    args = p.parse_args(argv)
    repository, _, tag = args.push.rpartition(":") if ":" in args.push.rsplit("/", 1)[-1] else (args.push, "", "")
    settings = Settings.from_env(registry=repository)
    registry = open_registry(repository, settings.registry_user, settings.registry_password,
                             insecure=settings.registry_insecure)
    builder = AppendBuilder(registry, {}, Path(args.cache_dir) if args.cache_dir else settings.data_dir / "cache")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        image = build(builder, args.base, log)
        ref = registry.push(image, repository, [tag or gazelle.__version__], log)
    except errors.GazelleError as err:
        print(f"gazelle: {err}", file=sys.stderr)
        return 1
    finally:
        builder.close()
    print(str(ref), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
