"""The runtime spreads kept-alive connections over its workers (``gazelle.runtime.worker``).

Real gunicorn, two workers; which worker holds a connection is read from the kernel (the workers'
sockets, through psutil), not from anything the runtime says about itself.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections import Counter

import psutil
import pytest
from _runtime import Picky, Runtime, save

pytestmark = pytest.mark.integration

CONNECTIONS = 8


@pytest.fixture(scope="module")
def picky(tmp_path_factory):
    return save(tmp_path_factory.mktemp("bundles"), Picky(), name="picky", sample=["a", "bb"])


def _workers(runtime: Runtime, count: int = 2) -> list[psutil.Process]:
    deadline = time.monotonic() + 30
    while True:
        workers = psutil.Process(runtime.proc.pid).children()
        if len(workers) == count or time.monotonic() > deadline:
            assert len(workers) == count, f"{len(workers)} workers, expected {count}"
            return workers
        time.sleep(0.05)


def _holders(runtime: Runtime, workers: list[psutil.Process], conns: list[http.client.HTTPConnection]) -> Counter:
    """How many of ``conns`` each worker holds (by pid; 0 for a worker that holds none)."""
    ours = {c.sock.getsockname()[1] for c in conns if c.sock is not None}
    held = Counter({w.pid: 0 for w in workers})
    for w in workers:
        for s in w.net_connections(kind="tcp"):
            if s.laddr and s.laddr.port == runtime.port and s.raddr and s.raddr.port in ours \
                    and s.status == psutil.CONN_ESTABLISHED:
                held[w.pid] += 1
    return held


def _ask(conn: http.client.HTTPConnection, text: str) -> None:
    conn.request("POST", "/predict", body=json.dumps({"instances": [text]}),
                 headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["predictions"] == [len(text)]


def _connections(runtime: Runtime) -> list[http.client.HTTPConnection]:
    conns = [http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=30) for _ in range(CONNECTIONS)]
    for c in conns:   # a burst of connects, as a pooled client opens them
        c.connect()
    return conns


def test_a_burst_of_kept_alive_connections_is_spread_over_the_workers(picky, tmp_path):
    with Runtime(picky, tmp_path / "runtime.log", workers=2) as runtime:
        runtime.wait_ready()
        workers = _workers(runtime)
        conns = _connections(runtime)
        try:
            for n, c in enumerate(conns):
                _ask(c, "x" * (n + 1))
            held = _holders(runtime, workers, conns)
            assert sum(held.values()) == CONNECTIONS, held
            assert min(held.values()) >= CONNECTIONS // 2 - 1, f"connections per worker: {dict(held)}"
        finally:
            for c in conns:
                c.close()


def test_connections_pinned_to_one_worker_move_to_the_other(picky, tmp_path):
    with Runtime(picky, tmp_path / "runtime.log", workers=2) as runtime:
        runtime.wait_ready()
        first, second = _workers(runtime)
        # With the second worker stopped, the first takes every connection (after its short hold; it
        # also closes some after their answer, which http.client reopens on the next request).
        os.kill(second.pid, signal.SIGSTOP)
        try:
            conns = _connections(runtime)
            for c in conns:
                _ask(c, "pinned")
            held = _holders(runtime, [first, second], conns)
            assert held[second.pid] == 0 and held[first.pid] >= CONNECTIONS // 2, dict(held)
        finally:
            os.kill(second.pid, signal.SIGCONT)
        try:
            # Now the first answers some requests with "Connection: close"; http.client reconnects,
            # and the new connections go to the second. Every answer stays correct meanwhile.
            for _ in range(200):
                for c in conns:
                    _ask(c, "moving")
                held = _holders(runtime, [first, second], conns)
                if min(held.values()) >= CONNECTIONS // 2 - 1:
                    break
                time.sleep(0.02)
            assert min(held.values()) >= CONNECTIONS // 2 - 1, f"connections per worker: {dict(held)}"
        finally:
            for c in conns:
                c.close()


def test_a_kept_alive_connection_serves_requests_sent_at_once_and_after_a_pause(picky, tmp_path):
    """Requests right after an answer are read by the thread that answered (worker.LINGER_SECONDS);
    after a longer pause the connection is back with the event loop. Both give every answer."""
    with Runtime(picky, tmp_path / "runtime.log", workers=1, env={"GAZELLE_RUNTIME_THREADS": "2"}) as runtime:
        runtime.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=30)
        try:
            _ask(conn, "y")
            first = conn.sock.getsockname()
            for n, pause in enumerate([0, 0, 0.05, 0, 0.3, 0, 0]):
                time.sleep(pause)
                _ask(conn, "y" * (n + 2))
            # one connection all along: nothing closed it between requests (http.client would reconnect)
            assert conn.sock is not None and conn.sock.getsockname() == first
            [worker] = _workers(runtime, count=1)
            assert _holders(runtime, [worker], [conn])[worker.pid] == 1
        finally:
            conn.close()
