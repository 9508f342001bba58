"""Addresses of runtimes, and the pooled HTTP clients that reach them.

A runtime answers at a base URL that the target returns in ``Running.url`` and the store keeps:

- ``unix:/abs/path/http.sock``: a unix socket (the local target). Only the server's user can reach it:
  the socket lives in a directory no one else can open, so no other process on the machine can send a
  request to a private model without a token, or take a crashed runtime's address over.
- ``http://host:port``: TCP (containers, pods).

``client(url)`` gives one pooled ``httpx.Client`` per address and process (gunicorn forks: a pool never
crosses a fork); ``http_url(url, path)`` is the URL to request with it. Before connecting to a unix
socket, ``verified_socket`` checks that the path is a socket owned by the expected user and not a
symlink, so a runtime cannot point the gateway at some other socket on the host.
"""
from __future__ import annotations

import http.client
import os
import socket
import stat
import threading
from pathlib import Path

import httpx

from gazelle.errors import TargetError

UNIX = "unix:"
# What the URL of a request over a unix socket carries as its host (the Host header the runtime sees).
_UNIX_BASE = "http://runtime"
READ_TIMEOUT = 300.0   # seconds a model may take to answer one request
_TIMEOUT = httpx.Timeout(READ_TIMEOUT, connect=5.0)
_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0)


def unix_url(path: Path | str) -> str:
    return f"{UNIX}{path}"


def socket_path(url: str) -> str | None:
    """The socket path of a ``unix:`` URL, else None."""
    return url[len(UNIX):] if url.startswith(UNIX) else None


def http_url(url: str, path: str) -> str:
    """The absolute URL for ``path`` (``/predict?x=1``) on the runtime at ``url``, for ``client(url)``."""
    base = _UNIX_BASE if socket_path(url) is not None else url.rstrip("/")
    return base + (path if path.startswith("/") else "/" + path)


def verified_socket(path: str, *, owners: tuple[int, ...] | None = None) -> str:
    """``path`` if it is a unix socket (not a symlink) owned by one of ``owners``; else TargetError."""
    try:
        info = os.lstat(path)
    except OSError:
        raise TargetError(f"the runtime's socket {path} is gone") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise TargetError(f"{path} is not the runtime's socket (it is not a socket)")
    if owners is not None and info.st_uid not in owners:
        raise TargetError(f"{path} is not the runtime's socket (owned by uid {info.st_uid})")
    return path


_clients: dict[str, httpx.Client] = {}
_clients_pid = 0
_lock = threading.Lock()


def client(url: str) -> httpx.Client:
    """The pooled client for the runtime at ``url`` (one per address, per process)."""
    global _clients_pid
    key = socket_path(url) or ""
    with _lock:
        if _clients_pid != os.getpid():
            _clients.clear()   # inherited across a fork: its connections belong to the parent
            _clients_pid = os.getpid()
        found = _clients.get(key)
        if found is None:
            transport = httpx.HTTPTransport(uds=key, limits=_LIMITS) if key else httpx.HTTPTransport(limits=_LIMITS)
            # Runtimes are local or in-cluster: never through a proxy from the environment.
            found = _clients[key] = httpx.Client(transport=transport, timeout=_TIMEOUT, follow_redirects=False,
                                                 trust_env=False)
        return found


def forget(url: str) -> None:
    """Close and drop the pool of a runtime that stopped (its socket may be reused by the next one)."""
    key = socket_path(url)
    if key is None:
        return
    with _lock:
        found = _clients.pop(key, None)
    if found is not None:
        found.close()


class UnixConnection(http.client.HTTPConnection):
    """An HTTP connection to a unix socket (a runtime's, nginx's control socket)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("runtime", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def answers(url: str, path: str, *, timeout: float = 2.0) -> bool:
    """Whether GET ``path`` on the runtime at ``url`` answers 200 (one short connection, no pool)."""
    unix = socket_path(url)
    if unix is not None:
        conn: http.client.HTTPConnection = UnixConnection(unix, timeout)
    else:
        host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()
