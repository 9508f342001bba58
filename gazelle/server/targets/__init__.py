"""Targets run released versions of models: ``Target.deploy(release) -> Running``.

A target receives an artifact (``release.artifact``: a ``LocalEnv`` for the local target, a
digest-pinned ``ImageRef`` for image targets), never a bundle to unpack. Every version of a model runs
on its own address; the gateway decides which one is "live". A target never switches traffic itself:
the pipeline does that after the sanity check passes.

``close()`` releases clients and threads and never stops a model: whether models stop when the server
exits is decided in ``server/wiring.py`` (the local target's runtimes stop on a requested shutdown; a
killed server leaves them for the next one to adopt; a cluster's versions never stop with the server).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from gazelle.server.artifacts import Artifact

Log = Callable[[str], None]


@dataclass(frozen=True)
class Release:
    """One version of one model, ready to run."""

    name: str
    version: int
    artifact: Artifact                          # what the build (and push) made
    manifest: Mapping[str, Any]                 # the bundle's gazelle.json
    public: bool = False
    replicas: int = 1
    resources: Mapping[str, Any] | None = None
    env: Mapping[str, str] = field(default_factory=dict)   # extra, non-secret environment


@dataclass(frozen=True)
class Running:
    """Where a running version answers: ``url`` is the base URL of its runtime (``{url}/predict``)."""

    name: str
    version: int
    url: str


class Target(Protocol):
    def deploy(self, release: Release, log: Log) -> Running:
        """Start ``release`` beside whatever already runs and return once it is ready.

        On failure raise ``TargetError`` whose message names the cause and whose ``detail`` holds the
        last log lines (a model that raises while loading: its own exception message), after stopping
        what was started. Nothing already running is touched.
        """
        ...

    def running(self) -> list[Running]:
        """Every version this target runs now."""
        ...

    def restore(self, releases: list[Release], log: Log,
                on_ready: Callable[[Running], None] | None = None) -> list[Running]:
        """Bring back, after a server restart, the versions that should be running.

        Versions come back independently (one slow to load keeps no other waiting); ``on_ready`` is
        called for each as soon as it answers, so its traffic can resume at once.
        """
        ...

    def stop(self, name: str, version: int, *, grace: float = 10.0) -> None:
        """Stop one version after its in-flight requests finish (at most ``grace`` seconds)."""
        ...

    def logs(self, name: str, version: int, *, tail: int = 200) -> list[str]:
        """The last ``tail`` lines the version's runtime wrote."""
        ...

    def delete(self, name: str) -> None:
        """Stop every version of ``name`` and forget it."""
        ...

    def close(self) -> None:
        """Release clients and threads; every version keeps running."""
        ...


@runtime_checkable
class Switching(Protocol):
    """A target that routes traffic of its own besides the gateway's (the kubernetes target's stable
    Service and Ingress): the live stage calls ``switch`` right after the sanity check passed."""

    def switch(self, name: str, version: int) -> None:
        """Send the target's own per-model traffic to ``version``."""
        ...
