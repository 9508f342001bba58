"""Where the gateway sends a request: ``RouteTable.resolve(name, version)`` from the store, cached.

Resolving sits on the hot path of every prediction, so answers are cached in memory. The pipeline
invalidates a model's entries the moment it switches the live version in this process; entries also
expire after ``ttl`` seconds, which bounds how long another server process (``--workers`` > 1) keeps
sending to a version that is no longer live. The pipeline's drain delay is longer than ``ttl``, so a
stale entry still points at a running version.

Replicas: a target that knows which addresses of a version are ready now (``addresses(name, version)``,
the kubernetes target's EndpointSlice watch) is asked on every resolve, from memory; requests go round
robin over those addresses, each route carrying the others for a retry after a refused connection. An
empty answer (every pod of the version is being replaced) is a 503 with ``Retry-After``; None (the
target cannot say yet) leaves the address stored at deploy.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace
from typing import Callable

from gazelle.errors import ModelNotFound, NotFound, Restoring, Unavailable, VersionNotFound
from gazelle.server.gateway import Route
from gazelle.server.store import Store

SERVING = ("live", "ready")
Addresses = Callable[[str, int], "list[str] | None"]


class RouteTable:
    def __init__(self, store: Store, ttl: float = 1.0, *, addresses: Addresses | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        self.ttl = ttl
        self.addresses = addresses
        self.on_change = on_change   # called after every invalidate (the front re-reads the routes)
        self._turn = itertools.count()
        self._cache: dict[tuple[str, int | None], tuple[Route, float]] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str, version: int | None = None) -> Route:
        """The route to ``name``'s live version (or to ``version``); NotFound says what is missing."""
        key = (name, version)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return self._spread(hit[0])
        route = self._lookup(name, version)
        with self._lock:
            self._cache[key] = (route, now + self.ttl)
        return self._spread(route)

    def _spread(self, route: Route) -> Route:
        """The route to the next of the version's ready addresses, the others as its alternatives."""
        found = self.addresses(route.name, route.version) if self.addresses is not None else None
        if found is None:
            return route
        if not found:
            raise Unavailable(f"model {route.name} version {route.version} has no ready pod right now "
                              "(one is being replaced); try again in a moment", retry_after=1)
        start = next(self._turn) % len(found)
        ordered = found[start:] + found[:start]
        return replace(route, url=ordered[0], alternatives=tuple(ordered[1:]))

    def invalidate(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                for key in [k for k in self._cache if k[0] == name]:
                    del self._cache[key]
        if self.on_change is not None:
            self.on_change()

    def live(self) -> list[Route]:
        """The route to every model's live version that can be served now (uncached; two queries)."""
        public = {model.name: model.public for model in self.store.models()}
        return [Route(name=row.model, version=row.version, url=row.url, public=public[row.model])
                for row in self.store.live_versions()
                if row.model in public and row.status in SERVING and row.url]

    def _lookup(self, name: str, version: int | None) -> Route:
        model = self.store.model(name)
        if model is None:
            raise ModelNotFound(name)
        number = model.live_version if version is None else version
        if number is None:
            raise NotFound(f"model {name} has no live version yet")
        row = self.store.version(name, number)
        if row is None:
            raise VersionNotFound(name, number, [v.version for v in self.store.versions(name)])
        if row.status == "restoring":
            raise Restoring(name, number)
        if row.status == "down":
            raise Unavailable(f"model {name} version {number} could not be started again after a server "
                              f"restart (see `gazelle logs {name}`); deploy it again or roll back")
        if row.status not in SERVING or not row.url:
            raise NotFound(f"model {name} version {number} is not running (it is {row.status})")
        # A pinned version is public only if the model is: a private model stays private at every URL.
        public = model.public if version is None else (model.public and row.public)
        return Route(name=name, version=number, url=row.url, public=public)
