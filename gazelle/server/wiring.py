"""The one place that reads the settings and picks implementations: which builder, registry and target.

Everything else receives the pieces it needs. Pairings are fixed by what a target can run: the local
target runs what ``VenvBuilder`` makes (an environment on this host, nothing to push); image builders
(``append``, ``docker``) pair with image-running targets (``docker``, ``kubernetes``). Constructors do
no I/O, so wiring is cheap and has no side effects.

Wiring also decides what happens to the models when the server exits (``Wiring.close``): the local
target's runtimes stop on a requested shutdown (Ctrl-C, SIGTERM) and are left running when the server
dies, for the next one to adopt; versions on a cluster, and the docker target's containers, never stop
with the server.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from gazelle.choices import DEFAULT_BUILDER, PAIRS, TARGETS
from gazelle.errors import ConfigError
from gazelle.server.builders import Builder
from gazelle.server.bundlestore import BundleStore, DatabaseBundles, DataDirBundles
from gazelle.server.pipeline import Publish
from gazelle.server.settings import Settings
from gazelle.server.store import Store
from gazelle.server.targets import Target

if TYPE_CHECKING:
    from gazelle.server.builders.append import AppendBuilder
    from gazelle.server.builders.docker import DockerBuilder
    from gazelle.server.registry.keychain import Keychain

log = logging.getLogger("gazelle.server")


@dataclass(frozen=True)
class Wiring:
    builder: Builder
    target: Target
    publish: Publish | None = None   # None: the target runs builds in place (the push stage is skipped)
    stop_models: Callable[[float], None] | None = None   # run on a requested shutdown, with the grace
    start_warnings: Callable[[], list[str]] | None = None  # what an operator must hear at start
    # The ready addresses of a version as the target sees them now (None: use the stored one).
    addresses: Callable[[str, int], list[str] | None] | None = None

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
    if target_name == "docker":
        return _docker(settings, builder_name)
    if target_name == "kubernetes":
        return _kubernetes(settings, builder_name)
    if settings.registry:
        log.warning("the local target pushes nothing: the registry %s is not used", settings.registry)
    from gazelle.server.builders.venv import VenvBuilder
    from gazelle.server.targets.local import LocalTarget

    target = LocalTarget(settings.data_dir)
    return Wiring(builder=VenvBuilder(settings.data_dir), target=target,
                  stop_models=lambda grace: target.shutdown(grace=grace),
                  start_warnings=lambda: [w for w in (target.sandbox.warning(),) if w])


def _docker(settings: Settings, builder_name: str) -> Wiring:
    """Containers through the engine at ``DOCKER_HOST`` (as the docker CLI reads it), pulled by digest.

    With the docker builder the same engine builds and pushes; with the append builder the registry
    client pushes. Either way the image is in ``GAZELLE_REGISTRY`` before a container runs it, and
    the containers outlive the server (``stop_models`` is None).
    """
    if not settings.registry:
        raise ConfigError("the docker target runs images from a registry: set GAZELLE_REGISTRY "
                          "(--registry HOST[:PORT]/PREFIX)")
    from gazelle.server.targets.docker import DockerTarget

    builder: Builder
    builder, publish = append_builder(settings) if builder_name == "append" else docker_builder(settings)
    target = DockerTarget(_docker_engine, network=settings.docker_network, keychain=_keychain(settings),
                          tokens_dir=settings.data_dir / "runtime-tokens")
    return Wiring(builder=builder, target=target, publish=publish)


def docker_builder(settings: Settings) -> tuple["DockerBuilder", Publish]:
    """The docker builder and the push stage that has the same engine push its images to
    ``settings.registry``: for the docker target, and for ``gazelle image --builder docker``. No I/O.

    The engine is the one at ``DOCKER_HOST`` (as the docker CLI reads it); credentials as for
    ``append_builder``.
    """
    if not settings.registry:
        raise ConfigError("the docker builder pushes images: set GAZELLE_REGISTRY (or --registry) "
                          "to HOST[:PORT]/PREFIX")
    from gazelle.server.builders.docker import DockerBuilder
    from gazelle.server.registry.engine import EnginePublisher

    builder = DockerBuilder(_docker_engine, settings.registry, base_images=settings.base_images,
                            apt=settings.docker_apt_packages)
    return builder, EnginePublisher(builder.engine, settings.registry, keychain=_keychain(settings))


def _docker_engine() -> Any:
    import docker

    return docker.from_env(version="auto", timeout=300)


def _keychain(settings: Settings) -> "Keychain":
    from gazelle.server.registry.keychain import default_keychain

    return default_keychain(settings.registry, settings.registry_user, settings.registry_password)


def _kubernetes(settings: Settings, builder_name: str) -> Wiring:
    """The builder's image is pushed to the registry; KubernetesTarget runs the digest in the namespace.

    The cluster comes from ``KUBECONFIG`` (or ``~/.kube/config``), else the in-cluster service account.
    """
    if not settings.registry:
        raise ConfigError("the kubernetes target runs images from a registry: set GAZELLE_REGISTRY "
                          "(--registry HOST[:PORT]/PREFIX)")
    from gazelle.server.targets import _k8s_objects
    from gazelle.server.targets.kubernetes import KubernetesTarget

    builder: Builder
    builder, publish = append_builder(settings) if builder_name == "append" else docker_builder(settings)
    options = _k8s_objects.Options(
        namespace=settings.k8s_namespace, host_network=settings.k8s_host_network,
        image_pull_secrets=settings.k8s_image_pull_secrets, env_secrets=settings.k8s_env_secrets,
        ingress_host=settings.k8s_ingress_host, ingress_class=settings.k8s_ingress_class,
        ingress_tls_secret=settings.k8s_ingress_tls_secret,
        hpa_max_replicas=settings.k8s_hpa_max_replicas, startup_seconds=settings.k8s_startup_seconds,
        gateway=settings.k8s_gateway,
        termination_grace=max(1, int(settings.stop_grace)))
    target = KubernetesTarget(options, keep_versions=settings.k8s_keep_versions,
                              ready_timeout=settings.k8s_ready_timeout)
    # The gateway follows the versions' EndpointSlices (replaced pods, every ready replica), or with
    # GAZELLE_K8S_GATEWAY=service sends to each version's Service.
    return Wiring(builder=builder, target=target, publish=publish, addresses=target.addresses)


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Configured secret values, to scrub from anything recorded."""
    return tuple(s for s in (settings.registry_password,) if s)


def append_builder(settings: Settings) -> tuple["AppendBuilder", Publish]:
    """The append builder and the push stage that publishes its images to ``settings.registry``
    (``HOST[:PORT]/PREFIX``): for the image targets, and for ``gazelle image``. No I/O.

    Credentials: docker's ``config.json``, then ``GAZELLE_REGISTRY_USER`` / ``_PASSWORD`` for the
    registry's host; dependency layers are cached under ``{data_dir}/cache``.
    """
    if not settings.registry:
        raise ConfigError("the append builder pushes images: set GAZELLE_REGISTRY (or --registry) "
                          "to HOST[:PORT]/PREFIX")
    from gazelle.server.builders.append import AppendBuilder
    from gazelle.server.registry import image_publisher, open_registry

    registry = open_registry(settings.registry, settings.registry_user, settings.registry_password,
                             insecure=settings.registry_insecure)
    return (AppendBuilder(registry, settings.base_images, settings.data_dir / "cache"),
            image_publisher(registry, settings.registry))


def shared_jobs(settings: Settings) -> bool:
    """Whether several replicas share the jobs: a PostgreSQL store and a target every replica reaches.

    The local target owns processes on this host, and SQLite lives on one machine: both keep the
    single runner behind the runner lock.
    """
    return settings.db_url.startswith("postgresql") and settings.target != "local"


def replica_id() -> str:
    """This process's name as a lease owner: host, pid and a random part (pids repeat across pods)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def bundle_store(settings: Settings, store: Store) -> BundleStore:
    """The data dir on one machine; the shared database when several replicas share the jobs."""
    return DatabaseBundles(store) if shared_jobs(settings) else DataDirBundles()
