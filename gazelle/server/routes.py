"""Where the gateway sends a request: ``RouteTable.resolve(name, version)`` from the store, cached.

Resolving sits on the hot path of every prediction, so answers are cached in memory. The pipeline
invalidates a model's entries the moment it switches the live version in this process; entries also
expire after ``ttl`` seconds, which bounds how long another server process (``--workers`` > 1) keeps
sending to a version that is no longer live. The pipeline's drain delay is longer than ``ttl``, so a
stale entry still points at a running version.
"""
from __future__ import annotations

import threading
import time

from gazelle.errors import ModelNotFound, NotFound, Restoring, Unavailable, VersionNotFound
from gazelle.server.gateway import Route
from gazelle.server.store import Store

SERVING = ("live", "ready")


class RouteTable:
    def __init__(self, store: Store, ttl: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[tuple[str, int | None], tuple[Route, float]] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str, version: int | None = None) -> Route:
        """The route to ``name``'s live version (or to ``version``); NotFound says what is missing."""
        key = (name, version)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        route = self._lookup(name, version)
        with self._lock:
            self._cache[key] = (route, now + self.ttl)
        return route

    def invalidate(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                for key in [k for k in self._cache if k[0] == name]:
                    del self._cache[key]

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
