"""The one place that reads the settings and picks implementations: which builder, registry and target.

Everything else receives the pieces it needs. Pairings are fixed by what a target can run: the local
target runs what ``VenvBuilder`` makes (an environment on this host, nothing to push); image builders
(``append``, ``docker``) pair with image-running targets (``docker``, ``kubernetes``). Constructors do
no I/O, so wiring is cheap and has no side effects. The docker target reaches its engine through
``DOCKER_HOST`` (as the docker CLI does), builds with ``DockerBuilder`` and pushes through the same
engine to ``GAZELLE_REGISTRY``.

Wiring also decides what happens to the models when the server exits (``Wiring.close``): the local
target's runtimes stop on a requested shutdown (Ctrl-C, SIGTERM) and are left running when the server
dies, for the next one to adopt; versions on a cluster, and the docker target's containers, never stop
with the server.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from gazelle.errors import ConfigError
from gazelle.server.builders import Builder
from gazelle.server.pipeline import Publish
from gazelle.server.settings import TARGETS, Settings
from gazelle.server.targets import Target

log = logging.getLogger("gazelle.server")

AVAILABLE_TARGETS = ("local", "docker")
# What each available target can run today (the append builder is not in this version yet).
AVAILABLE_BUILDERS = {"local": ("venv",), "docker": ("docker",)}
DEFAULT_BUILDER = {"local": "venv", "docker": "docker", "kubernetes": "append"}
PAIRS = {"local": ("venv",), "docker": ("docker", "append"), "kubernetes": ("append", "docker")}


@dataclass(frozen=True)
class Wiring:
    builder: Builder
    target: Target
    publish: Publish | None = None   # None: the target runs builds in place (the push stage is skipped)
    stop_models: Callable[[float], None] | None = None   # run on a requested shutdown, with the grace
    start_warnings: Callable[[], list[str]] | None = None  # what an operator must hear at start

    def warnings(self) -> list[str]:
        return self.start_warnings() if self.start_warnings is not None else []

    def close(self, *, requested: bool, grace: float = 10.0) -> None:
        """Release the parts; on a ``requested`` shutdown also stop the models that stop with the server."""
        if requested and self.stop_models is not None:
            self.stop_models(grace)
        self.target.close()
        self.builder.close()


def build(settings: Settings) -> Wiring:
    """Builder, registry and target for ``settings``; ConfigError names any impossible choice."""
    target_name = settings.target
    if target_name not in TARGETS:
        raise ConfigError(f"unknown target {target_name!r}; valid targets: {', '.join(TARGETS)}")
    builder_name = settings.builder or DEFAULT_BUILDER[target_name]
    if builder_name not in PAIRS[target_name]:
        raise ConfigError(f"the {target_name} target cannot run what the {builder_name} builder makes; "
                          f"valid builders for it: {', '.join(PAIRS[target_name])}")
    if target_name not in AVAILABLE_TARGETS:
        raise ConfigError(f"the {target_name} target is not available in this version of gazelle; "
                          f"valid targets: {', '.join(AVAILABLE_TARGETS)}")
    if builder_name not in AVAILABLE_BUILDERS[target_name]:
        raise ConfigError(f"the {builder_name} builder is not available in this version of gazelle; "
                          f"valid builders for the {target_name} target: "
                          f"{', '.join(AVAILABLE_BUILDERS[target_name])}")
    if target_name == "docker":
        return _docker(settings)
    if settings.registry:
        log.warning("the local target pushes nothing: the registry %s is not used", settings.registry)
    from gazelle.server.builders.venv import VenvBuilder
    from gazelle.server.targets.local import LocalTarget

    target = LocalTarget(settings.data_dir)
    return Wiring(builder=VenvBuilder(settings.data_dir), target=target,
                  stop_models=lambda grace: target.shutdown(grace=grace),
                  start_warnings=lambda: [w for w in (target.sandbox.warning(),) if w])


def _docker(settings: Settings) -> Wiring:
    """DockerBuilder -> the same engine pushes -> DockerTarget pulls by digest; models outlive the server."""
    if not settings.registry:
        raise ConfigError("the docker target runs images from a registry: set GAZELLE_REGISTRY "
                          "(--registry HOST[:PORT]/PREFIX)")
    from gazelle.server.builders.docker import DockerBuilder
    from gazelle.server.registry.engine import EnginePublisher, registry_of
    from gazelle.server.targets.docker import DockerTarget

    host, user, password = registry_of(settings.registry), settings.registry_user, settings.registry_password

    def credentials(registry: str) -> tuple[str, str] | None:
        # Settings are for the configured registry only; any other falls back to docker's config.json.
        return (user, password) if user and password and registry == host else None

    def engine() -> Any:
        import docker

        return docker.from_env(version="auto", timeout=300)   # DOCKER_HOST, as the docker CLI reads it

    builder = DockerBuilder(engine, settings.registry, base_images=settings.base_images,
                            apt=settings.docker_apt_packages)
    target = DockerTarget(engine, network=settings.docker_network, credentials=credentials)
    return Wiring(builder=builder, target=target,
                  publish=EnginePublisher(builder.engine, settings.registry, credentials=credentials))


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Configured secret values, to scrub from anything recorded."""
    return tuple(s for s in (settings.registry_password,) if s)
