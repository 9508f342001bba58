"""Publishing through a Docker engine: ``push_engine_image`` turns an ``EngineImage`` into an ``ImageRef``.

``DockerBuilder`` leaves its image in the engine; the engine pushes it (it holds the layers), and the
digest the registry stored comes back in the push stream's ``aux`` message. That digest, never the
tag, is what a target runs.

Credentials come from a ``Keychain`` (``registry.keychain``: docker's ``config.json``, then the
settings) and reach the engine in the ``X-Registry-Auth`` header of that one request; where the
keychain has none, the ``docker`` package falls back to the client's own ``~/.docker/config.json``.
They never appear in a log line or an error: the engine's messages do not carry them, and
``RegistryError`` names the registry and repository only.

``EnginePublisher`` is the push stage for ``DockerBuilder``'s images (the pipeline's ``Publish``):
model ``accounts`` version 3 goes to ``{prefix}/accounts:v3-<unix time>``. ``pull_image`` is the
other direction, for targets: pull by digest and report the engine's reason.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from gazelle.errors import RegistryError
from gazelle.server.artifacts import EngineImage, ImageRef
from gazelle.server.engine import engine_message
from gazelle.server.registry.keychain import Keychain

Log = Callable[[str], None]

# Push progress says "Pushing" many times per layer; these are the lines worth a job event.
_LAYER_DONE = ("Pushed", "Layer already exists", "Mounted from", "Already exists", "Pull complete")


def registry_of(repository: str) -> str:
    """``127.0.0.1:5000/gazelle/accounts`` -> ``127.0.0.1:5000`` (Docker Hub names have no host part)."""
    host, slash, _ = repository.partition("/")
    if slash and ("." in host or ":" in host or host == "localhost"):
        return host
    return "docker.io"


def auth_config(keychain: Keychain | None, host: str) -> dict[str, str] | None:
    """The engine's ``X-Registry-Auth`` value for ``host``, from ``keychain``; None: docker's own config."""
    found = keychain.credentials(host) if keychain is not None else None
    if found is None:
        return None
    if found.identity_token:
        return {"identitytoken": found.identity_token, "serveraddress": host}
    return {"username": found.username, "password": found.password, "serveraddress": host}


def push_engine_image(client: Any, image: EngineImage, repository: str, tags: Sequence[str], log: Log, *,
                      keychain: Keychain | None = None) -> ImageRef:
    """Tag ``image`` as ``repository:tag`` for each tag, push, return the digest-pinned reference."""
    if not tags:
        raise ValueError("push_engine_image needs at least one tag")
    host = registry_of(repository)
    if host == "docker.io" or "/" not in repository:
        raise RegistryError(f"{repository!r} names no registry host; expected HOST[:PORT]/PATH",
                            url=repository)
    path = repository[len(host) + 1:]
    auth = auth_config(keychain, host)
    digest: str | None = None
    for tag in tags:
        target = f"{repository}:{tag}"
        try:
            client.api.tag(image.id, repository, tag)
            stream = client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth)
            got = _follow(stream, log, target)
        except RegistryError:
            raise
        except Exception as err:   # the engine refused the request itself
            raise RegistryError(f"the Docker engine could not push {target}: {engine_message(err)}",
                                url=host, retryable=_retryable(err)) from None
        if got is None:
            raise RegistryError(f"the Docker engine pushed {target} but reported no digest", url=host)
        if digest is not None and got != digest:
            raise RegistryError(f"the registry {host} stored {target} as {got}, other tags as {digest}",
                                url=host)
        digest = got
    assert digest is not None
    ref = ImageRef(host, path, digest)
    log(f"pushed {ref}")
    return ref


class EnginePublisher:
    """``Publish`` for images a Docker engine holds: ``publisher(image, name, version, log) -> ImageRef``.

    ``engine()`` returns the client of the engine that holds the images (``DockerBuilder.engine``:
    the builder owns and closes it); it is called on each push, never here.
    """

    def __init__(self, engine: Callable[[], Any], registry_prefix: str, *,
                 keychain: Keychain | None = None, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.registry_prefix = registry_prefix.rstrip("/")
        self.keychain = keychain
        self.clock = clock

    def __call__(self, artifact: Any, name: str, version: int, log: Log) -> ImageRef:
        if not isinstance(artifact, EngineImage):
            raise RegistryError(f"the Docker engine pushes only images it built, not {type(artifact).__name__}",
                                url=registry_of(self.registry_prefix))
        return push_engine_image(self.engine(), artifact, f"{self.registry_prefix}/{name}",
                                 [f"v{version}-{int(self.clock())}"], log, keychain=self.keychain)


def pull_image(client: Any, ref: ImageRef, log: Log, *, keychain: Keychain | None = None) -> None:
    """Pull ``ref`` (by digest) into the engine; RegistryError with the engine's reason otherwise."""
    repository = f"{ref.registry}/{ref.repository}"
    try:
        stream = client.api.pull(repository, tag=ref.digest, stream=True, decode=True,
                                 auth_config=auth_config(keychain, ref.registry))
        _follow(stream, log, str(ref), verb="pull")
    except RegistryError:
        raise
    except Exception as err:
        raise RegistryError(f"the Docker engine could not pull {ref}: {engine_message(err)}", url=ref.registry,
                            retryable=_retryable(err)) from None


def _follow(stream: Iterable[Mapping[str, Any]], log: Log, target: str, *, verb: str = "push") -> str | None:
    """Log each layer's outcome once; the digest from the ``aux`` message; RegistryError on an error."""
    digest: str | None = None
    retrying: set[str] = set()   # the engine counts a retry down each second: one line per retry is enough
    for chunk in stream:
        if "error" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = str(detail.get("message") if isinstance(detail, Mapping) else "") or str(chunk["error"])
            raise RegistryError(f"the Docker engine could not {verb} {target}: {message.strip()}",
                                url=registry_of(target), retryable=_retryable_text(message))
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and aux.get("Digest"):
            digest = str(aux["Digest"])
        status = str(chunk.get("status") or "")
        layer = str(chunk.get("id") or "")
        if status.startswith("Retrying"):
            if layer in retrying:
                continue
            retrying.add(layer)
        elif status.startswith(_LAYER_DONE) or status.startswith(("Digest:", "Status:")):
            retrying.discard(layer)
        else:
            continue
        log(f"{layer}: {status}" if layer else status)
    return digest


def _retryable(err: Exception) -> bool:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return bool(status and status >= 500) or _retryable_text(engine_message(err))


def _retryable_text(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in ("connection refused", "timeout", "temporarily", "503", "502",
                                            "reset by peer", "eof"))
