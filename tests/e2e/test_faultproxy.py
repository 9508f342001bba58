"""The fault-injecting proxy (tests/faultproxy.py) in front of the real plain registry: what it
counts is what went up, a fault strikes exactly the requests it was armed for, and everything else
reaches the registry unchanged (the blob read back from the registry directly is the one sent)."""
from __future__ import annotations

import hashlib
import os
import uuid
from typing import Iterator

import httpx
import pytest

from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e

TIMEOUT = 10.0
UPLOADS = r"/blobs/uploads/"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunked_upload(client: httpx.Client, repository: str, data: bytes, chunk: int,
                   retries: int = 0) -> httpx.Response:
    """POST, one PATCH per chunk (each retried up to ``retries`` times on a 5xx), PUT ?digest=."""
    r = client.post(f"/v2/{repository}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    for offset in range(0, len(data), chunk):
        part = data[offset:offset + chunk]
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Range": f"{offset}-{offset + len(part) - 1}"}
        for _ in range(retries + 1):
            r = client.patch(location, content=part, headers=headers)
            if r.status_code < 500:
                break
        assert r.status_code == 202, r.text
        location = r.headers["location"]
    url = httpx.URL(location)
    return client.put(url.copy_merge_params({"digest": digest_of(data)}))


@pytest.fixture
def repository() -> str:
    return f"gazelle/proxy-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(registry_proxy: FaultProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_proxy.url, timeout=TIMEOUT) as c:
        yield c


def blob_in_registry(registry_url: str, repository: str, digest: str) -> bytes:
    r = httpx.get(f"http://{registry_url}/v2/{repository}/blobs/{digest}", timeout=TIMEOUT,
                  follow_redirects=True)
    assert r.status_code == 200
    return r.content


def test_blob_upload_is_counted_exactly_and_reaches_the_registry(
        registry_proxy: FaultProxy, client: httpx.Client, registry_url: str, repository: str) -> None:
    data = os.urandom(100_000)
    done = chunked_upload(client, repository, data, chunk=40_000)
    assert done.status_code == 201
    assert registry_proxy.uploaded_blobs() == {digest_of(data): 100_000}
    assert registry_proxy.bytes_sent("PATCH", UPLOADS) == 100_000
    assert [e.sent for e in registry_proxy.requests("PATCH")] == [40_000, 40_000, 20_000]
    assert registry_proxy.bytes_sent("PUT") == 0
    assert blob_in_registry(registry_url, repository, digest_of(data)) == data
    # the Location headers pointed back at the proxy: the whole session went through it
    assert [e.method for e in registry_proxy.exchanges] == ["POST", "PATCH", "PATCH", "PATCH", "PUT"]


def test_response_bytes_are_counted_and_a_second_upload_is_told_apart(
        registry_proxy: FaultProxy, client: httpx.Client, repository: str) -> None:
    first, second = os.urandom(5_000), os.urandom(7_000)
    assert chunked_upload(client, repository, first, chunk=5_000).status_code == 201
    assert chunked_upload(client, repository, second, chunk=3_000).status_code == 201
    assert registry_proxy.uploaded_blobs() == {digest_of(first): 5_000, digest_of(second): 7_000}
    head = client.head(f"/v2/{repository}/blobs/{digest_of(second)}")
    assert head.status_code == 200
    got = client.get(f"/v2/{repository}/blobs/{digest_of(second)}", follow_redirects=True)
    assert got.content == second
    assert registry_proxy.requests("HEAD")[0].received == 0
    assert registry_proxy.requests("GET")[-1].received == 7_000


def test_injected_500_in_the_middle_of_an_upload_is_seen_once_then_the_retry_succeeds(
        registry_proxy: FaultProxy, client: httpx.Client, registry_url: str, repository: str) -> None:
    fault = registry_proxy.fail("PATCH", UPLOADS, after=1)
    data = os.urandom(90_000)
    done = chunked_upload(client, repository, data, chunk=30_000, retries=1)
    assert done.status_code == 201
    assert fault.fired == 1
    statuses = [(e.method, e.status, e.fault) for e in registry_proxy.exchanges]
    assert statuses == [("POST", 202, None), ("PATCH", 202, None), ("PATCH", 500, "status 500"),
                        ("PATCH", 202, None), ("PATCH", 202, None), ("PUT", 201, None)]
    # the faulted PATCH went out but never reached the registry: 30 KB more sent than stored
    assert registry_proxy.uploaded_blobs() == {digest_of(data): 120_000}
    assert blob_in_registry(registry_url, repository, digest_of(data)) == data


def test_injected_error_carries_a_registry_style_body_and_strikes_the_set_number_of_times(
        registry_proxy: FaultProxy, client: httpx.Client, repository: str) -> None:
    fault = registry_proxy.fail("POST", UPLOADS, status=503, times=2)
    answers = [client.post(f"/v2/{repository}/blobs/uploads/") for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 202]
    assert answers[0].json()["errors"][0]["code"] == "UNKNOWN"
    assert fault.fired == 2 and fault.seen == 3


def test_dropped_connection_reaches_the_client_and_the_next_request_goes_through(
        registry_proxy: FaultProxy, client: httpx.Client, registry_url: str, repository: str) -> None:
    data = os.urandom(10_000)
    fault = registry_proxy.drop("PUT", r"[?&]digest=")
    with pytest.raises(httpx.RemoteProtocolError):
        chunked_upload(client, repository, data, chunk=10_000)
    assert fault.fired == 1
    assert registry_proxy.exchanges[-1].status is None and registry_proxy.exchanges[-1].fault == "drop"
    assert chunked_upload(client, repository, data, chunk=10_000).status_code == 201
    assert blob_in_registry(registry_url, repository, digest_of(data)) == data


def test_chunked_request_body_is_forwarded_and_counted(
        registry_proxy: FaultProxy, client: httpx.Client, registry_url: str, repository: str) -> None:
    data = os.urandom(50_000)
    start = client.post(f"/v2/{repository}/blobs/uploads/")
    url = httpx.URL(start.headers["location"]).copy_merge_params({"digest": digest_of(data)})
    pieces = (data[i:i + 8_192] for i in range(0, len(data), 8_192))
    done = client.put(url, content=pieces, headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    assert done.request.headers["transfer-encoding"] == "chunked"
    assert registry_proxy.uploaded_blobs() == {digest_of(data): 50_000}
    assert blob_in_registry(registry_url, repository, digest_of(data)) == data


def test_proxy_stops_and_refuses_connections_after_close(registry_url: str) -> None:
    proxy = FaultProxy(registry_url).start()
    assert httpx.get(f"{proxy.url}/v2/", timeout=TIMEOUT).status_code == 200
    proxy.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{proxy.url}/v2/", timeout=TIMEOUT)
