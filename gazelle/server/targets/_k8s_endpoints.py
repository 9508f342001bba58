"""Which addresses of each model version are ready now: the namespace's EndpointSlices, watched.

``EndpointWatch`` keeps ``(model, version) -> endpoints`` from the EndpointSlices of gazelle's version
Services (``gazelle-M-vN``), so the gateway follows a pod that is replaced (a new address, or in
host-network mode the same node port with another pod behind it) and spreads requests over the
replicas, without kube-proxy. One thread per server process: a list, then a watch from the list's
``resourceVersion`` (bookmarks keep it fresh); a watch the API server ends is resumed from the last
version seen, a ``410 Gone`` (the version is too old) lists again, any other error waits (doubling,
up to ``max_backoff``) and lists again. ``close()`` stops the thread and its open watch.

``addresses`` answers from memory: None while the watch has not listed (or lost its connection), or
knows no slice of the version, so the caller falls back to the address it stored; else the ready
addresses, possibly none (a pod being replaced). ``apply`` and ``replace`` are the bookkeeping, fed
with the API's own event dicts; the I/O comes in as two callables, so the bookkeeping runs without a
cluster.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

from gazelle.errors import TargetError
from gazelle.server.targets import _k8s_objects as objects

log = logging.getLogger("gazelle.server")

SELECTOR = "app.kubernetes.io/managed-by=gazelle," + objects.VERSION_LABEL


@dataclass(frozen=True)
class Endpoint:
    url: str            # http://ip:port
    pod: str | None     # the pod behind it (targetRef), when the slice names one
    ready: bool


class Stream(Protocol):
    """An open watch: its events as dicts (``{"type": ..., "object": {...}}``), and a way to end it from
    another thread."""

    def __iter__(self) -> Iterator[Mapping[str, Any]]: ...

    def close(self) -> None: ...


Lister = Callable[[], tuple[list[Mapping[str, Any]], str]]   # (slices, resourceVersion)
Watcher = Callable[[str], Stream]                             # from that resourceVersion


class Expired(Exception):
    """The watch's resourceVersion is gone from the API server's window (410): list again."""


class EndpointWatch:
    def __init__(self, list_slices: Lister, watch_slices: Watcher, *, backoff: float = 0.5,
                 max_backoff: float = 30.0) -> None:
        self._list, self._watch = list_slices, watch_slices
        self.backoff, self.max_backoff = backoff, max_backoff
        self._slices: dict[str, tuple[tuple[str, int], list[Endpoint]]] = {}
        self._synced = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stream: Stream | None = None

    # -- answers -----------------------------------------------------------------------------------

    def endpoints(self, name: str, version: int) -> list[Endpoint] | None:
        """Every endpoint of the version (ready or not); None when the watch cannot say."""
        with self._lock:
            if not self._synced:
                return None
            found = [e for key, endpoints in self._slices.values() if key == (name, version) for e in endpoints]
            known = any(key == (name, version) for key, _ in self._slices.values())
        return found if known else None

    def addresses(self, name: str, version: int) -> list[str] | None:
        """The version's ready addresses (each once, sorted); None when the watch cannot say."""
        found = self.endpoints(name, version)
        if found is None:
            return None
        return sorted({e.url for e in found if e.ready})

    # -- bookkeeping -------------------------------------------------------------------------------

    def replace(self, items: Iterable[Mapping[str, Any]]) -> None:
        """What a list answered: every slice, replacing all that was known."""
        slices = {}
        for item in items:
            parsed = parse_slice(item)
            if parsed is not None:
                slices[_slice_name(item)] = parsed
        with self._lock:
            self._slices = slices
            self._synced = True

    def apply(self, event: Mapping[str, Any]) -> str | None:
        """One watch event; the resourceVersion it carries. Expired on 410, TargetError on other errors."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired(obj.get("message"))
            raise TargetError(f"the EndpointSlice watch failed: {obj.get('message') or obj}")
        name = _slice_name(obj)
        with self._lock:
            if kind == "DELETED":
                self._slices.pop(name, None)
            elif kind in ("ADDED", "MODIFIED"):
                parsed = parse_slice(obj)
                if parsed is None:
                    self._slices.pop(name, None)
                else:
                    self._slices[name] = parsed
        found = (obj.get("metadata") or {}).get("resourceVersion")
        return str(found) if found else None

    # -- the thread --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching, once per process (a forked worker starts its own); returns at once."""
        with self._lock:
            if self._stop.is_set() or (self._thread is not None and self._pid == os.getpid()):
                return
            self._pid = os.getpid()
            self._synced = False
            self._thread = threading.Thread(target=self._run, name="gazelle-k8s-endpoints", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and self._pid == os.getpid():
            thread.join(timeout)

    def _run(self) -> None:
        delay = self.backoff
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    items, version = self._list()
                    self.replace(items)
                self._stream = self._watch(version)
                try:
                    for event in self._stream:
                        if self._stop.is_set():
                            return
                        version = self.apply(event) or version
                finally:
                    self._stream.close()
                    self._stream = None
                delay = self.backoff   # the API server ended the watch: resume from the last version
            except Expired:
                version = None
            except Exception as err:   # the cluster away, a refused list: wait, then list again
                if self._stop.is_set():
                    return
                with self._lock:
                    self._synced = False
                log.warning("watching EndpointSlices: %s; again in %gs", err, delay)
                version = None
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)


def _slice_name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name"))


def parse_slice(item: Mapping[str, Any]) -> tuple[tuple[str, int], list[Endpoint]] | None:
    """``((model, version), endpoints)`` of one slice of a version Service; None for any other slice."""
    # The EndpointSlice controller copies the Service's labels onto its slices.
    labels = (item.get("metadata") or {}).get("labels") or {}
    if objects.MODEL_LABEL not in labels or not str(labels.get(objects.VERSION_LABEL, "")).isdigit():
        return None
    key = (str(labels[objects.MODEL_LABEL]), int(labels[objects.VERSION_LABEL]))
    ports = [p.get("port") for p in item.get("ports") or [] if p.get("port")]
    endpoints = []
    for endpoint in item.get("endpoints") or []:
        if not ports or not endpoint.get("addresses"):
            continue
        address = endpoint["addresses"][0]
        host = f"[{address}]" if ":" in address else address
        # "ready" unset means unknown, which the API says to read as ready.
        ready = (endpoint.get("conditions") or {}).get("ready") is not False
        endpoints.append(Endpoint(f"http://{host}:{ports[0]}", (endpoint.get("targetRef") or {}).get("name"), ready))
    return key, endpoints
