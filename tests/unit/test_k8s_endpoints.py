"""The EndpointSlice watch's bookkeeping, fed with event dicts recorded from the 1.20 test cluster's API
(a version Service's slice as a pod is replaced), and the route table's round robin over what it knows."""
from __future__ import annotations

import copy
import threading
from typing import Any, Iterator

import pytest

from gazelle.errors import Unavailable
from gazelle.server.routes import RouteTable
from gazelle.server.store import Store
from gazelle.server.targets._k8s_endpoints import EndpointWatch

SLICE: dict[str, Any] = {
    "addressType": "IPv4", "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
    "metadata": {"name": "gazelle-lengths-v1-8x2kq", "namespace": "gazelle-models", "resourceVersion": "4711",
                 "generateName": "gazelle-lengths-v1-",
                 "labels": {"app.kubernetes.io/managed-by": "gazelle",
                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                            "gazelle.dev/model": "lengths", "gazelle.dev/version": "1",
                            "kubernetes.io/service-name": "gazelle-lengths-v1"}},
    "endpoints": [{"addresses": ["10.1.0.7"], "conditions": {"ready": True}, "topology": {"kubernetes.io/hostname": "node"},
                   "targetRef": {"kind": "Pod", "name": "gazelle-lengths-v1-5d8f-abcde", "namespace": "gazelle-models"}}],
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
}


def sliced(*endpoints: tuple[str, str, bool | None], rv: str = "4712", name: str | None = None) -> dict[str, Any]:
    out = copy.deepcopy(SLICE)
    out["metadata"]["resourceVersion"] = rv
    if name:
        out["metadata"]["name"] = name
    out["endpoints"] = [{"addresses": [ip], "conditions": {} if ready is None else {"ready": ready},
                         "targetRef": {"kind": "Pod", "name": pod}} for ip, pod, ready in endpoints]
    return out


def gone(message: str = "too old resource version: 4711 (5100)") -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "message": message, "reason": "Expired", "code": 410}}


def unused_watch(resource_version: str) -> Any:
    raise AssertionError("not watched in this test")


def test_nothing_is_known_before_the_first_list() -> None:
    watch = EndpointWatch(lambda: ([], "1"), unused_watch)
    assert watch.addresses("lengths", 1) is None


def test_added_modified_and_deleted_events_follow_a_replaced_pod() -> None:
    watch = EndpointWatch(lambda: ([], "1"), unused_watch)
    watch.replace([SLICE])
    assert watch.addresses("lengths", 1) == ["http://10.1.0.7:8080"]
    assert watch.addresses("lengths", 2) is None, "a version without a slice: the watch cannot say"
    # the pod is deleted: its endpoint leaves; the replacement is there, not ready yet
    assert watch.apply({"type": "MODIFIED", "object": sliced(("10.1.0.9", "new-pod", False))}) == "4712"
    assert watch.addresses("lengths", 1) == []
    assert [(e.pod, e.ready) for e in watch.endpoints("lengths", 1) or []] == [("new-pod", False)]
    watch.apply({"type": "MODIFIED", "object": sliced(("10.1.0.9", "new-pod", True), rv="4713")})
    assert watch.addresses("lengths", 1) == ["http://10.1.0.9:8080"]
    watch.apply({"type": "DELETED", "object": sliced(rv="4714")})
    assert watch.addresses("lengths", 1) is None


def test_replicas_are_spread_over_slices_and_an_unknown_readiness_counts_as_ready() -> None:
    watch = EndpointWatch(lambda: ([], "1"), unused_watch)
    watch.replace([sliced(("10.1.0.7", "a", True), ("10.1.0.8", "b", None)),
                   sliced(("10.1.0.10", "c", True), ("10.1.0.11", "d", False), name="gazelle-lengths-v1-second")])
    assert watch.addresses("lengths", 1) == ["http://10.1.0.10:8080", "http://10.1.0.7:8080", "http://10.1.0.8:8080"]


def test_a_bookmark_moves_the_resource_version_and_changes_nothing() -> None:
    watch = EndpointWatch(lambda: ([], "1"), unused_watch)
    watch.replace([SLICE])
    bookmark = {"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "metadata": {"resourceVersion": "5000"}}}
    assert watch.apply(bookmark) == "5000"
    assert watch.addresses("lengths", 1) == ["http://10.1.0.7:8080"]


def test_slices_of_other_services_are_ignored() -> None:
    stable = copy.deepcopy(SLICE)
    del stable["metadata"]["labels"]["gazelle.dev/version"]   # the stable Service gazelle-M
    watch = EndpointWatch(lambda: ([], "1"), unused_watch)
    watch.replace([stable])
    assert watch.addresses("lengths", 1) is None


class _Stream:
    def __init__(self, events: list[dict[str, Any]], hold: threading.Event | None = None) -> None:
        self.events, self.hold, self.closed = events, hold, threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self.events
        if self.hold is not None:   # an open watch with nothing more to say, until closed
            self.closed.wait(30)

    def close(self) -> None:
        self.closed.set()


def test_a_410_lists_again_and_the_watch_resumes_from_the_new_list() -> None:
    lists: list[str] = []
    watched: list[str] = []
    settled = threading.Event()
    streams = [_Stream([gone()]),
               _Stream([{"type": "MODIFIED", "object": sliced(("10.1.0.9", "new-pod", True), rv="5200")}],
                       hold=settled)]

    def list_slices() -> tuple[list[dict[str, Any]], str]:
        lists.append("list")
        return ([SLICE], "4711") if len(lists) == 1 else ([sliced(("10.1.0.9", "new-pod", False))], "5100")

    def watch_slices(resource_version: str) -> _Stream:
        watched.append(resource_version)
        stream = streams.pop(0)
        if not streams:
            settled.set()
        return stream

    watch = EndpointWatch(list_slices, watch_slices)
    watch.start()
    try:
        assert settled.wait(30)
        for _ in range(300):
            if watch.addresses("lengths", 1) == ["http://10.1.0.9:8080"]:
                break
            threading.Event().wait(0.05)
        assert watch.addresses("lengths", 1) == ["http://10.1.0.9:8080"]
        assert watched == ["4711", "5100"] and len(lists) == 2
    finally:
        watch.close()
    assert streams == [] and not watch._thread.is_alive()   # type: ignore[union-attr]


def test_an_error_makes_the_watch_unsure_until_it_lists_again() -> None:
    failing = threading.Event()
    lists: list[int] = []

    def list_slices() -> tuple[list[dict[str, Any]], str]:
        lists.append(1)
        if len(lists) == 2:
            failing.set()
            raise OSError("connection refused")
        return [SLICE], "1"

    def watch_slices(resource_version: str) -> _Stream:
        if len(lists) >= 3:
            return _Stream([], hold=threading.Event())
        raise OSError("connection reset")

    watch = EndpointWatch(list_slices, watch_slices, backoff=0.01)
    watch.start()
    try:
        assert failing.wait(30)
        for _ in range(300):
            if len(lists) >= 3 and watch.addresses("lengths", 1) is not None:
                break
            threading.Event().wait(0.05)
        assert watch.addresses("lengths", 1) == ["http://10.1.0.7:8080"]
    finally:
        watch.close()


def test_the_route_table_goes_round_robin_and_an_empty_answer_is_a_503(tmp_path: Any) -> None:
    from gazelle.server.artifacts import ImageRef

    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.create_schema()
    store.add_version("lengths", "sha256:" + "1" * 64, {"name": "lengths"}, public=True, replicas=1)
    store.update_version("lengths", 1, url="http://10.1.0.7:8080",
                         artifact=ImageRef("r:5000", "m/lengths", "sha256:" + "2" * 64))
    store.switch_live("lengths", 1)
    known: dict[tuple[str, int], list[str] | None] = {("lengths", 1): None}
    table = RouteTable(store, ttl=60, addresses=lambda name, version: known[(name, version)])
    assert table.resolve("lengths").url == "http://10.1.0.7:8080", "the stored address while the watch cannot say"
    known[("lengths", 1)] = ["http://a:1", "http://b:1", "http://c:1"]
    routes = [table.resolve("lengths") for _ in range(6)]
    assert sorted(r.url for r in routes[:3]) == ["http://a:1", "http://b:1", "http://c:1"]
    assert [r.url for r in routes[3:]] == [r.url for r in routes[:3]]
    assert all(set(r.alternatives) == {"http://a:1", "http://b:1", "http://c:1"} - {r.url} for r in routes)
    known[("lengths", 1)] = []
    with pytest.raises(Unavailable) as none_ready:
        table.resolve("lengths")
    assert "no ready pod" in str(none_ready.value) and none_ready.value.headers() == {"Retry-After": "1"}
