"""The route table's view of what can be served (gazelle.server.routes), on a real SQLite store."""
from __future__ import annotations

import pytest

from gazelle.errors import NotFound, Unavailable
from gazelle.server.routes import Route, RouteTable
from gazelle.server.store import Store
from tests.unit._server import store  # noqa: F401  (fixture)

MANIFEST = {"name": "lens", "python": "3.11.7", "sample": ["a"]}


def _live(store: Store, name: str, status: str, *, public: bool = False, url: str | None = "unix:/run/x") -> None:
    row, _ = store.add_version(name, f"sha256:{name}", MANIFEST, public=public, replicas=1)
    store.switch_live(name, row.version)
    store.update_version(name, row.version, status=status, url=url)


def test_live_lists_the_serving_live_version_of_each_model_and_nothing_else(store: Store) -> None:
    _live(store, "lens", "live", url="unix:/run/lens")
    _live(store, "open", "live", public=True, url="unix:/run/open")
    _live(store, "back", "restoring")
    _live(store, "gone", "down")
    _live(store, "nourl", "live", url=None)
    store.add_version("fresh", "sha256:fresh", MANIFEST, public=False, replicas=1)   # never live
    routes = RouteTable(store)
    assert routes.live() == [Route(name="lens", version=1, url="unix:/run/lens", public=False),
                             Route(name="open", version=1, url="unix:/run/open", public=True)]
    # the same answer, one model at a time
    assert [routes.resolve(r.name) for r in routes.live()] == routes.live()
    for name, error in (("back", Unavailable), ("gone", Unavailable), ("nourl", NotFound), ("fresh", NotFound)):
        with pytest.raises(error):
            routes.resolve(name)
