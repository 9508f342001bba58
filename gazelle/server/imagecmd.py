"""``gazelle image BUNDLE --registry HOST[:PORT]/PREFIX``: build and push a model image, no server needed.

For a CI job: the bundle becomes ``HOST[:PORT]/PREFIX/NAME:v{version}-{unix time}`` (NAME from the
bundle, version from ``--version``, default 0), and the LAST line on stdout is the digest reference
``HOST[:PORT]/PREFIX/NAME@sha256:<hex>`` that a deployment should use. Progress goes to stderr.
It reads ``GAZELLE_BASE_IMAGES``, ``GAZELLE_REGISTRY_USER`` / ``_PASSWORD``,
``GAZELLE_REGISTRY_INSECURE`` and docker's ``config.json`` exactly as the server does, and caches
dependency layers under ``$GAZELLE_DATA_DIR/cache`` (the server's cache, when it shares the data dir).

``--builder docker`` has the Docker engine at ``DOCKER_HOST`` build the image from a generated
Dockerfile and push it (for bundles that need system packages, ``GAZELLE_DOCKER_APT_PACKAGES``, or
dependencies built from source).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from gazelle.errors import ConfigError

_REGISTRY = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+(?::\d+)?|\[[0-9a-fA-F:]+\](?::\d+)?)"
                       r"(?P<prefix>(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)/?$")


def repository_for(registry: str, name: str) -> str:
    """``HOST[:PORT]/PREFIX`` + model name -> ``HOST[:PORT]/PREFIX/NAME``; ConfigError names --registry."""
    match = _REGISTRY.match(registry.strip())
    if not match:
        raise ConfigError(f"--registry must look like HOST[:PORT]/PREFIX with a lowercase path, got {registry!r}")
    return f"{match.group('host')}{match.group('prefix')}/{name}"


def main(args: argparse.Namespace) -> int:
    from gazelle.bundle import read_manifest
    from gazelle.server.settings import Settings
    from gazelle.server.wiring import append_builder, docker_builder

    if args.version < 0:
        raise ConfigError(f"--version must be 0 or more, got {args.version}")
    settings = Settings.from_env(registry=args.registry, builder=args.builder)
    if (settings.builder or "append") not in ("append", "docker"):
        raise ConfigError(f"the {settings.builder} builder makes no image; valid builders: append, docker")
    bundle = Path(args.bundle)
    manifest = read_manifest(bundle)
    name = str(manifest["name"])
    repository_for(args.registry, name)   # a malformed --registry fails before any work

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    builder: Any
    builder, publish = docker_builder(settings) if settings.builder == "docker" else append_builder(settings)
    try:
        ref = publish(builder.build(bundle, manifest, log, version=args.version), name, args.version, log)
    finally:
        builder.close()
    print(str(ref), flush=True)
    return 0
