"""Helpers every test tier shares: a free loopback port, a model that raises while it loads, and one
that takes its time to load.

``Boom`` and ``SlowToLoad`` are plain classes in a module that is not an installed distribution, so bundles carry it by
value: a runtime process (or container) that cannot import the tests still unpickles it, and fails.
"""
from __future__ import annotations

import socket
from typing import Any

# Ports the test environment's services hold (registries, etcd, the API server, kubelet, PostgreSQL):
# a port the kernel hands out may be one of them between their restarts.
RESERVED_PORTS = frozenset({5000, 5001, 5002, 5003, 2379, 2380, 2381, 6443, 55432, *range(10248, 10261)})


def free_port() -> int:
    """A loopback TCP port nothing listens on now (and none the test environment uses)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


class Boom:
    """Pickles fine, raises while loading: the runtime must fail with the model's own message."""

    def predict(self, rows: Any) -> list[int]:
        return [0 for _ in rows]

    def __getstate__(self) -> dict[str, Any]:
        return {"armed": True}

    def __setstate__(self, state: dict[str, Any]) -> None:
        raise RuntimeError("boom while loading")


class SlowToLoad:
    """Takes ``seconds`` to unpickle, as a large model does (or longer than any startup budget)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, rows: Any) -> list[int]:
        return [len(r) for r in rows]

    def __setstate__(self, state: dict[str, Any]) -> None:
        import time

        time.sleep(state["seconds"])
        self.__dict__.update(state)
