"""Slow clients cannot starve the build server (real gunicorn server, loopback), with nginx in front
and without: 200 connections trickling request headers a byte a second hold no request thread, so
predictions through the gateway, ``/healthz`` and a deploy go on; headers that never finish get a 408
(nginx closes the connection instead); one address past its connection bound gets a 503; event
streams past their budget get a 503 and leave the threads to predictions."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from gazelle.server.events import KEEPALIVE_SECONDS
from tests.integration._server import ServerProcess, bundle, kill_runtimes, lengths, require_nginx, start_server

pytestmark = pytest.mark.integration

TRICKLERS = 200
HEADER_TIMEOUT = 25     # longer than the trickle test takes
SHORT_HEADER_TIMEOUT = 2
PER_CLIENT = 40
STREAMS = 2


@pytest.fixture(scope="module", params=["nginx", "off"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if request.param == "nginx":
        require_nginx()
    env = {"GAZELLE_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "GAZELLE_MAX_CLIENT_CONNECTIONS": str(PER_CLIENT),
           "GAZELLE_MAX_EVENT_STREAMS": str(STREAMS), "GAZELLE_TEST_STAGE_DELAY": "slow:build=40",
           "GAZELLE_FRONT": request.param}
    s = start_server(tmp_path_factory.mktemp("slowloris") / "data", env=env)
    try:
        yield s
    finally:
        s.terminate()
        kill_runtimes(s.data_dir)


class Tricklers:
    """``count`` connections, spread over loopback addresses 127.0.0.2 ..., each sending a request's
    headers one byte a second from one thread."""

    def __init__(self, port: int, count: int, per_address: int) -> None:
        self.socks: list[socket.socket] = []
        for i in range(count):
            sock = socket.socket()
            sock.bind((f"127.0.0.{2 + i // per_address}", 0))
            sock.connect(("127.0.0.1", port))
            self.socks.append(sock)
        self.request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
        self.sent = 0
        self.broken = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0) and self.sent < len(self.request) - 1:
            byte = self.request[self.sent:self.sent + 1]
            for sock in self.socks:
                try:
                    sock.send(byte)
                except OSError:
                    self.broken += 1
            self.sent += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


def _port(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_trickling_clients_slow_neither_predictions_nor_healthz_nor_a_deploy(server: ServerProcess) -> None:
    first = server.deploy("steady", bundle(lengths, "steady"))
    assert first["status"] == "succeeded", json.dumps(first, indent=1)
    slow = Tricklers(_port(server), TRICKLERS, per_address=PER_CLIENT // 2)
    try:
        time.sleep(3)   # every trickler has sent a few bytes: with gthread, each would now hold a thread
        for _ in range(50):
            answer = server.predict("/m/steady/predict", ["abcd", "ab"])
            assert answer.status_code == 200 and answer.json()["predictions"] == [4, 2], answer.text
        with httpx.Client(trust_env=False, timeout=10) as c:
            assert c.get(f"{server.url}/healthz").status_code == 200
        second = server.deploy("during", bundle(lengths, "during"))
        assert second["status"] == "succeeded", json.dumps(second, indent=1)
        assert server.predict("/m/during/predict", ["xyz"]).json()["predictions"] == [3]
        assert slow.broken == 0 and slow.sent < len(slow.request) - 1, "the tricklers were still trickling"
    finally:
        slow.close()


@pytest.fixture(params=["nginx", "off"])
def impatient(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server with a short header timeout."""
    if request.param == "nginx":
        require_nginx()
    s = start_server(tmp_path / "data", env={"GAZELLE_HEADER_TIMEOUT": str(SHORT_HEADER_TIMEOUT),
                                             "GAZELLE_FRONT": request.param})
    try:
        yield s
    finally:
        s.terminate()


def test_headers_that_never_finish_get_a_408_after_the_header_timeout(impatient: ServerProcess) -> None:
    server = impatient
    sock = socket.create_connection(("127.0.0.1", _port(server)))
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(SHORT_HEADER_TIMEOUT + 15)
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    finally:
        sock.close()
    if server.front == "nginx":
        assert answer == b"", answer   # nginx closes a timed-out connection without an answer
        return
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"request_timeout"' in answer


def test_one_address_past_its_connection_bound_gets_a_503(server: ServerProcess) -> None:
    held = []
    try:
        for _ in range(PER_CLIENT):
            sock = socket.socket()
            sock.bind(("127.0.0.200", 0))
            sock.connect(("127.0.0.1", _port(server)))
            if server.front == "nginx":
                # nginx counts connections with a request in progress: headers done, a body pending.
                sock.sendall(b"POST /m/steady/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            held.append(sock)
        extra = socket.socket()
        extra.bind(("127.0.0.200", 0))
        extra.connect(("127.0.0.1", _port(server)))
        if server.front == "nginx":
            time.sleep(0.5)   # nginx has read every held request's headers
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        extra.settimeout(10)
        answer = extra.recv(4096)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too_many_connections" in answer, answer
        # Other addresses are not affected.
        assert server.predict("/m/steady/predict", ["a"]).status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_event_streams_past_their_budget_get_a_503_and_predictions_go_on(server: ServerProcess) -> None:
    job = server.upload("slow", bundle(lengths, "slow")).json()["job"]
    path = f"{server.url}/api/v1/jobs/{job}/events"
    headers = {"Authorization": f"Bearer {server.token}"}
    clients = [httpx.Client(trust_env=False, timeout=30) for _ in range(STREAMS + 1)]
    streams = []
    try:
        for c in clients[:STREAMS]:
            response = c.send(c.build_request("GET", path, headers=headers), stream=True)
            assert response.status_code == 200
            streams.append(response)
        refused = clients[STREAMS].get(path, headers=headers)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "poll" in refused.json()["error"]["message"]
        assert server.predict("/m/steady/predict", ["abc"]).json()["predictions"] == [3]
    finally:
        for response in streams:
            response.close()
        for c in clients:
            c.close()
    # A closed stream gives its slot back, at the latest when its next keep-alive finds it closed.
    def reopened() -> bool:
        with httpx.Client(trust_env=False, timeout=30) as c:
            with c.stream("GET", path, headers=headers) as again:
                return again.status_code == 200
    deadline = time.monotonic() + KEEPALIVE_SECONDS + 15
    while not reopened():
        assert time.monotonic() < deadline, "a closed event stream never gave its slot back"
        time.sleep(0.2)
