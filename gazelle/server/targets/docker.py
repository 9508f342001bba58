"""``DockerTarget``: every model version as a container, through the Docker Engine API.

A version runs from ``release.artifact``, a digest-pinned ``ImageRef``: the engine pulls it from the
registry by digest (never a tag), creates the container ``{instance}-{model}-v{version}`` and starts
it; ``deploy`` returns once ``/v2/health/ready`` answers 200. Only then does the container get the
restart policy ``unless-stopped``, so the engine restarts a runtime that crashes later (or that the
engine itself restarted), while a runtime that cannot start fails the deploy at once.

Networks (``network``):

- ``host`` (the default, for engines without a bridge network, like the test environment's): the
  container shares the host's network and gets a free port of its own through
  ``GAZELLE_RUNTIME_PORT``; it binds loopback when the server reaches it on loopback. The free port is
  chosen on the server's host, so this mode expects the engine on the same host; a port taken in
  between is retried with another.
- ``bridge``: the runtime listens on the image's port 8080 and the engine publishes it on a free port
  of ``publish_host`` (loopback by default).

Resources (``release.resources``, either shape of DESIGN section 1): the memory limit becomes the
container's hard limit (swap included, so it is a limit), the memory request a soft reservation, and
the CPUs (the limit, else the request: Docker has no scheduler requests) ``nano_cpus``.

Restore: containers carry the labels ``gazelle.instance``, ``gazelle.model``, ``gazelle.version``,
``gazelle.image`` and (host network) ``gazelle.port``; the engine is the only record. A new
``DockerTarget`` with the same ``instance`` finds its containers there, adopts those running the
wanted image and answering, and starts the others again. ``instance`` keeps servers (or test runs)
that share one engine apart. Image labels reach containers too, so ``gazelle.model`` alone proves
nothing: only ``gazelle.instance`` marks a container as this target's.

Secrets: the container's environment is ``release.env`` plus the runtime's own variables; nothing of
the server's environment is forwarded. Registry credentials reach the engine only in the pull
request's auth header.

Tokens: with ``tokens_dir`` set, each container gets ``{tokens_dir}/{container name}/`` bind-mounted
read-only at ``/gazelle-access``, holding the tokens file the runtime checks requests against
(``runtime_access``); the directory, not the file, is mounted, so that the file can be replaced
atomically. This expects the engine on the server's host (the default ``host`` network mode does too).

Limits: ``release.replicas`` is not used (one container per version: the gateway forwards to one
address). ``stop`` removes the container, so ``logs`` of a stopped version are gone with it.
"""
from __future__ import annotations

import math
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping

from docker.errors import APIError, DockerException, NotFound
from requests import RequestException

from gazelle.errors import RegistryError, TargetError
from gazelle.server.artifacts import ImageRef
from gazelle.server.engine import engine_message
from gazelle.server.registry.engine import pull_image
from gazelle.server.registry.keychain import Keychain
from gazelle.runtime.access import read as read_tokens_file
from gazelle.server import upstream
from gazelle.server.runtime_access import ENV as TOKENS_ENV
from gazelle.server.runtime_access import TOKENS_FILE, write_tokens_file
from gazelle.server.targets import Log, Release, Running
from gazelle.server.targets._logs import exit_cause
from gazelle.server.targets.resources import Resources

READY_PATH = "/v2/health/ready"
NETWORKS = ("host", "bridge")
_RESTORE_AT_ONCE = 4
IMAGE_PORT = 8080
_TAIL = 40
_PORT_ATTEMPTS = 3
_LABEL_INSTANCE = "gazelle.instance"
_LABEL_MODEL = "gazelle.model"
_LABEL_VERSION = "gazelle.version"
_LABEL_IMAGE = "gazelle.image"
_LABEL_PORT = "gazelle.port"
_EXITED = ("exited", "dead")
ACCESS_MOUNT = "/gazelle-access"


class DockerTarget:
    """Runs releases as containers (see the module docstring). The constructor does no I/O."""

    def __init__(self, client_factory: Callable[[], Any], *, network: str = "host", host: str = "127.0.0.1",
                 publish_host: str = "127.0.0.1", instance: str = "gazelle", workers: int | None = None,
                 ready_timeout: float = 120.0, keychain: Keychain | None = None,
                 tokens_dir: Path | None = None) -> None:
        if network not in NETWORKS:
            raise TargetError(f"unknown docker network mode {network!r}; valid modes: {', '.join(NETWORKS)}")
        self.client_factory = client_factory
        self.network = network
        self.host = host                  # where this server reaches the containers' ports
        self.publish_host = publish_host  # bridge: the host address the engine publishes on
        self.instance = instance
        self.workers = workers
        self.ready_timeout = ready_timeout
        self.keychain = keychain
        self.tokens_dir = tokens_dir
        # What runtimes accept (hash -> scope); None until the server first calls accept_tokens.
        self._tokens: dict[str, str] | None = None
        self._client: Any = None

    # -- Target ------------------------------------------------------------------------------------

    def deploy(self, release: Release, log: Log) -> Running:
        ref = _image_ref(release)
        resources = Resources.of(release.resources)
        current = self._container(release.name, release.version)
        if current is not None:
            running = self._adoptable(current, ref)
            if running is not None:
                log(f"{release.name} v{release.version} already runs at {running.url}")
                return running
            _discard(current)   # exited, or another image: this version starts afresh
        log(f"pulling {ref}")
        try:
            pull_image(self._engine(), ref, log, keychain=self.keychain)
        except RegistryError as err:
            raise TargetError(f"{release.name} v{release.version}: {err.message}", detail=err.detail) from None
        for attempt in range(_PORT_ATTEMPTS):
            try:
                return self._start(release, ref, resources, log)
            except _PortTaken as taken:
                log(f"port {taken.port} was taken before the runtime could bind it; retrying ({attempt + 1})")
        raise TargetError(f"{release.name} v{release.version} found no free port after {_PORT_ATTEMPTS} tries")

    def accept_tokens(self, tokens: Mapping[str, str]) -> None:
        """Rewrite every container's tokens file (``runtime_access.Guarded``); each keeps its public flag."""
        self._tokens = dict(tokens)
        if self.tokens_dir is None or not self.tokens_dir.is_dir():
            return
        for directory in sorted(self.tokens_dir.glob(f"{self.instance}-*")):
            path = directory / TOKENS_FILE
            if path.is_file():
                public, _ = read_tokens_file(str(path))
                write_tokens_file(path, public, self._tokens)

    def running(self) -> list[Running]:
        found = []
        for container in self._containers(status="running"):
            url = self._url(container)
            if url is not None:
                found.append(Running(container.labels[_LABEL_MODEL], int(container.labels[_LABEL_VERSION]), url))
        return found

    def restore(self, releases: list[Release], log: Log,
                on_ready: Callable[[Running], None] | None = None) -> list[Running]:
        """Adopt or start every release, ``_RESTORE_AT_ONCE`` at a time (one slow pull keeps no other
        waiting); ``on_ready`` hears of each as soon as it answers. Containers of versions no longer
        wanted are left to the caller, which knows the jobs still running (``running()`` lists them)."""
        def one(release: Release) -> Running | None:
            running = self.restore_one(release, log)
            if running is not None and on_ready is not None:
                on_ready(running)
            return running

        with ThreadPoolExecutor(max_workers=_RESTORE_AT_ONCE, thread_name_prefix="gazelle-restore") as pool:
            results = list(pool.map(one, releases))
        return [r for r in results if r is not None]

    def restore_one(self, release: Release, log: Log) -> Running | None:
        """Adopt ``release``'s container if it runs the release's image and answers, else start it again."""
        try:
            ref = _image_ref(release)
            current = self._container(release.name, release.version)
            adopted = self._adoptable(current, ref) if current is not None else None
            if current is not None and adopted is not None:
                log(f"{release.name} v{release.version} still runs at {adopted.url} "
                    f"(container {current.short_id}): adopted")
                return adopted
            return self.deploy(release, log)
        except TargetError as err:
            # One version that cannot start must not keep the others down; the caller sees why.
            log(f"{release.name} v{release.version} could not be restarted: {err}")
            return None

    def stop(self, name: str, version: int, *, grace: float = 10.0) -> None:
        """SIGTERM (gunicorn lets in-flight requests finish), SIGKILL after ``grace``, then remove."""
        container = self._container(name, version)
        if container is not None:
            self._remove(container, grace)

    def logs(self, name: str, version: int, *, tail: int = 200) -> list[str]:
        container = self._container(name, version)
        if container is None or tail <= 0:
            return []
        return _lines(container.logs(stdout=True, stderr=True, tail=tail))

    def delete(self, name: str) -> None:
        images = set()
        for container in self._containers(model=name):
            images.add(container.labels.get(_LABEL_IMAGE, ""))
            self._remove(container, grace=10.0)
        for image in sorted(i for i in images if i):
            try:
                self._engine().images.remove(image)
            except APIError:   # still used by another container, or already gone: nothing to free
                pass

    def close(self) -> None:
        """Close the engine client; every container keeps running."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- starting ------------------------------------------------------------------------------------

    def _start(self, release: Release, ref: ImageRef, resources: Resources, log: Log) -> Running:
        if self.network == "bridge":
            self._check_bridge()
        port = _free_port(self.host) if self.network == "host" else IMAGE_PORT
        options = self.container_options(release, ref, resources, port)
        try:
            container = self._engine().containers.create(str(ref), **options)
        except APIError as err:
            raise TargetError(f"the Docker engine could not create the container of {release.name} "
                              f"v{release.version}: {engine_message(err)}") from None
        try:
            url = self._run(container, release, port, log)
        except BaseException:
            _discard(container)
            raise
        log(f"{release.name} v{release.version} is ready at {url}")
        return Running(release.name, release.version, url)

    def _run(self, container: Any, release: Release, port: int, log: Log) -> str:
        """Start ``container``, wait until it answers, hand it to the engine's restart policy; its URL."""
        try:
            container.start()
        except APIError as err:
            raise TargetError(f"the Docker engine could not start {release.name} v{release.version}: "
                              f"{engine_message(err)}") from None
        url = self._url(container, refresh=True)
        if url is None:
            raise TargetError(f"the Docker engine published no port for {release.name} v{release.version} "
                              f"on its {self.network} network")
        log(f"started container {container.short_id} for {release.name} v{release.version} at {url}")
        self._wait_ready(container, release, url, port)
        container.update(restart_policy={"Name": "unless-stopped"})
        return url

    def _check_bridge(self) -> None:
        """An engine started without a bridge runs ``bridge`` containers unreachable; say so before."""
        try:
            self._engine().networks.get("bridge")
        except NotFound:
            raise TargetError("the Docker engine has no 'bridge' network, so a published port would lead "
                              "nowhere", hint="set GAZELLE_DOCKER_NETWORK=host for this engine") from None

    def container_options(self, release: Release, ref: ImageRef, resources: Resources,
                          port: int) -> dict[str, Any]:
        """The engine's create options for ``release`` (everything but the image)."""
        labels = {_LABEL_INSTANCE: self.instance, _LABEL_MODEL: release.name,
                  _LABEL_VERSION: str(release.version), _LABEL_IMAGE: str(ref)}
        env = dict(release.env)
        env["GAZELLE_MODEL_VERSION"] = str(release.version)
        if self.workers is not None:
            env["GAZELLE_RUNTIME_WORKERS"] = str(self.workers)
        options: dict[str, Any] = {"name": self._name(release.name, release.version), "labels": labels,
                                   "detach": True}
        if self.network == "host":
            labels[_LABEL_PORT] = str(port)
            env["GAZELLE_RUNTIME_PORT"] = str(port)
            env["GAZELLE_RUNTIME_HOST"] = "127.0.0.1" if _loopback(self.host) else "0.0.0.0"
            options["network_mode"] = "host"
        else:
            env["GAZELLE_RUNTIME_PORT"] = str(IMAGE_PORT)
            env["GAZELLE_RUNTIME_HOST"] = "0.0.0.0"
            options["network_mode"] = "bridge"
            options["ports"] = {f"{IMAGE_PORT}/tcp": (self.publish_host, None)}
        if self.tokens_dir is not None and self._tokens is not None:
            directory = self.tokens_dir / self._name(release.name, release.version)
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)   # the image's non-root user reads it through the mount
            write_tokens_file(directory / TOKENS_FILE, release.public, self._tokens)
            options["volumes"] = {str(directory): {"bind": ACCESS_MOUNT, "mode": "ro"}}
            env[TOKENS_ENV] = f"{ACCESS_MOUNT}/{TOKENS_FILE}"
        options["environment"] = env
        if resources.memory_limit is not None:
            options["mem_limit"] = resources.memory_limit
            options["memswap_limit"] = resources.memory_limit   # no swap on top: a limit is a limit
        if resources.memory_request is not None:
            limit = resources.memory_limit
            options["mem_reservation"] = resources.memory_request if limit is None else min(resources.memory_request, limit)
        if resources.cpus is not None:
            options["nano_cpus"] = int(resources.cpus * Decimal(10 ** 9))
        return options

    def _wait_ready(self, container: Any, release: Release, url: str, port: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.05
        while True:
            container.reload()
            if container.status in _EXITED:
                lines = _lines(container.logs(stdout=True, stderr=True, tail=_TAIL))
                if self.network == "host" and _port_in_use(lines):
                    raise _PortTaken(port)
                raise TargetError(f"{release.name} v{release.version}: {_exit_reason(container, lines)}",
                                  detail="\n".join(lines))
            if upstream.answers(url, READY_PATH, timeout=1.0):
                return
            if time.monotonic() > deadline:
                lines = _lines(container.logs(stdout=True, stderr=True, tail=_TAIL))
                raise TargetError(f"{release.name} v{release.version} did not answer {READY_PATH} within "
                                  f"{self.ready_timeout:g} s", detail="\n".join(lines))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    # -- finding containers ------------------------------------------------------------------------------

    def _engine(self) -> Any:
        if self._client is None:
            try:
                self._client = self.client_factory()
            except (DockerException, RequestException) as err:
                raise TargetError(f"the Docker engine cannot be reached: {engine_message(err)}",
                                  hint="check DOCKER_HOST and that the engine runs") from None
        return self._client

    def _name(self, name: str, version: int) -> str:
        return f"{self.instance}-{name}-v{version}"

    def _containers(self, *, model: str | None = None, status: str | None = None) -> list[Any]:
        labels = [f"{_LABEL_INSTANCE}={self.instance}"]
        if model is not None:
            labels.append(f"{_LABEL_MODEL}={model}")
        filters: dict[str, Any] = {"label": labels}
        if status is not None:
            filters["status"] = status
        try:
            return list(self._engine().containers.list(all=True, filters=filters))
        except (DockerException, RequestException) as err:
            raise TargetError(f"the Docker engine could not list gazelle's containers: {engine_message(err)}") from None

    def _container(self, name: str, version: int) -> Any | None:
        for container in self._containers(model=name):
            if container.labels.get(_LABEL_VERSION) == str(version):
                return container
        return None

    def _adoptable(self, container: Any, ref: ImageRef) -> Running | None:
        """The container as a Running version if it runs ``ref`` and answers; else None."""
        if container.status != "running" or container.labels.get(_LABEL_IMAGE) != str(ref):
            return None
        url = self._url(container)
        if url is None or not upstream.answers(url, READY_PATH):
            return None
        return Running(container.labels[_LABEL_MODEL], int(container.labels[_LABEL_VERSION]), url)

    def _url(self, container: Any, *, refresh: bool = False) -> str | None:
        port = container.labels.get(_LABEL_PORT)
        if port is None:
            if refresh:
                container.reload()
            published = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{IMAGE_PORT}/tcp")
            if not published:
                return None
            port = published[0].get("HostPort")
        return f"http://{_url_host(self.host)}:{port}" if port else None

    def _remove(self, container: Any, grace: float) -> None:
        try:
            if container.status == "running":
                container.update(restart_policy={"Name": "no"})   # or the engine starts it again
                container.stop(timeout=max(0, math.ceil(grace)))
            container.remove(force=True)
            if self.tokens_dir is not None:
                shutil.rmtree(self.tokens_dir / container.name, ignore_errors=True)
        except NotFound:
            pass   # removed meanwhile (by a sibling, or by hand): what stop wanted
        except APIError as err:
            raise TargetError(f"the Docker engine could not remove container {container.name}: "
                              f"{engine_message(err)}") from None


class _PortTaken(Exception):
    """Another process bound the free port between our choice and the runtime's bind."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.port = port


def _image_ref(release: Release) -> ImageRef:
    artifact = release.artifact
    if not isinstance(artifact, ImageRef):
        raise TargetError(f"the docker target runs images from a registry, not {artifact}",
                          hint="use an image builder (append or docker) with a registry")
    return artifact


def _exit_reason(container: Any, lines: list[str]) -> str:
    state: Mapping[str, Any] = container.attrs.get("State") or {}
    if state.get("OOMKilled"):
        limit = (container.attrs.get("HostConfig") or {}).get("Memory") or 0
        return (f"the container was killed for using more than its memory limit ({limit // (1 << 20)} MiB)"
                if limit else "the container ran out of memory")
    status = int(state.get("ExitCode") or 0)
    # A container's exit code 128+N means signal N: say it as the local target does.
    return exit_cause(-(status - 128) if 128 < status < 160 else status, lines)


def _discard(container: Any) -> None:
    try:
        container.remove(force=True)
    except APIError:
        pass   # the cause being raised matters more than a container the engine could not remove


def _lines(raw: bytes | str) -> list[str]:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return [line for line in text.splitlines() if line.strip()]


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _port_in_use(lines: list[str]) -> bool:
    return any("Address already in use" in line or "Connection in use" in line for line in lines)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
