"""Shared pieces of the Docker builder and target tests: small models, their bundles, engine clients.

The models are defined here, outside any installed distribution, so their bundles pickle them by value
and pin nothing but cloudpickle: an image of one builds in seconds once the engine has cached the
dependency stage.
"""
from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any, Callable

from gazelle import bundle
from tests.helpers import Boom, free_port  # noqa: F401  (shared; imported from here by the tests)


class Shout:
    """Answers each text row in capitals."""

    def predict(self, rows: Any) -> list[str]:
        return [str(row).upper() for row in rows]


SAMPLE = ["taxi to conference", "hotel night"]


def store(directory: Path, model: Any, *, name: str, sample: Any = SAMPLE,
          requirements: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Pack ``model`` into ``directory``: (bundle path, manifest)."""
    packed = bundle.pack(model, name=name, sample=sample, requirements=requirements)
    path = directory / f"{packed.digest.split(':')[1]}.tar"
    path.write_bytes(packed.data)
    return path, dict(packed.manifest)


def client_factory(docker_host: str) -> Callable[[], Any]:
    import docker

    return lambda: docker.DockerClient(base_url=docker_host, version="auto", timeout=300)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Lines(list):
    """A ``log`` callable that keeps what it was given."""

    def __call__(self, line: str) -> None:
        self.append(line)


def data_dir_sharing_layers(data_dir: Path) -> Path:
    """``data_dir`` whose ``cache`` is the test environment's: dependency layers outlive the run (like
    the Kubernetes binaries), so a warm run of a model with real pins does no pip."""
    shared = Path(os.environ.get("GAZELLE_TESTENV_CACHE", "/var/cache/gazelle-testenv")) / "append-layers"
    if shared.parent.is_dir() and os.access(shared.parent, os.W_OK):
        shared.mkdir(exist_ok=True)
        data_dir.mkdir(parents=True)
        (data_dir / "cache").symlink_to(shared, target_is_directory=True)
    return data_dir
