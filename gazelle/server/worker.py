"""The build server's gunicorn worker: gthread, except that no thread waits for a slow client.

gunicorn's gthread worker hands every new connection to a request thread, which then reads the
request headers blocking: a few dozen clients trickling headers a byte at a time hold every thread,
and the gateway, ``/healthz`` and deploys all stop. ``GatewayWorker`` reads each request's headers,
and a body up to ``Limits.prefetch_bytes``, in the worker's event loop, without blocking, and hands
the connection to a thread only once the request is complete, so a request thread only ever waits
for the application (a model's answer, the database) and for bodies larger than that (bundle uploads).

- Headers must be complete within ``Limits.header_timeout`` seconds of the first byte (or of the
  connection, or of the previous answer on a kept-alive connection); a prefetched body within
  ``Limits.body_timeout`` more. Otherwise the client gets a 408 and the connection is closed.
- One client address may hold ``Limits.per_client`` connections at once (0: no bound); one more gets
  a 503 and is closed at once. Behind a reverse proxy every client has the proxy's address: raise the
  bound, or turn it off, there.

Event streams are bounded separately (``events.StreamBudget``), so that they never hold the threads
predictions need. Limits: plain HTTP/1.x only (no TLS or HTTP/2 on this worker: the server is meant
to sit behind a TLS-terminating proxy or on loopback).
"""
from __future__ import annotations

import errno
import json
import re
import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

_END = b"\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d{1,12})[ \t]*\r\n", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
_MAX_HEADER_BYTES = 64 * 1024


def _answer(status: str, kind: str, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


_TIMEOUT_ANSWER = _answer("408 Request Timeout", "request_timeout", "the request did not arrive in time")
_BUSY_ANSWER = _answer("503 Service Unavailable", "too_many_connections",
                       "too many open connections from this address", b"Retry-After: 1\r\n")
_TOO_LARGE_ANSWER = _answer("431 Request Header Fields Too Large", "headers_too_large",
                            "the request headers exceed 64 KiB")


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    per_client: int = 100
    prefetch_bytes: int = 1 << 20


class _Conn(TConn):
    """A connection that tells the worker once when it closes (for the per-client count)."""

    def __init__(self, *args: Any, on_close: Any = None) -> None:
        super().__init__(*args)
        self._on_close = on_close
        self.buffer = bytearray()
        self.deadline = 0.0
        self.body_deadline = 0.0

    def close(self, graceful: bool = False) -> None:
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback()
        super().close(graceful)


class GatewayWorker(ThreadWorker):
    limits = Limits()   # set by the server before gunicorn forks

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading: dict[_Conn, None] = {}   # insertion-ordered: oldest deadline first is not assumed
        self._per_client: Counter[str] = Counter()

    # -- accepting -------------------------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        address = client_addr[0] if isinstance(client_addr, tuple) and client_addr else ""
        bound = self.limits.per_client
        if bound and address and self._per_client[address] >= bound:
            _refuse(client_sock, _BUSY_ANSWER)
            return
        self.nr_conns += 1
        self._per_client[address] += 1
        conn = _Conn(self.cfg, client_sock, client_addr, listener.getsockname(),
                     on_close=partial(self._released, address))
        self._start_reading(conn, b"")

    def _released(self, address: str) -> None:
        self._per_client[address] -= 1
        if self._per_client[address] <= 0:
            del self._per_client[address]

    # -- reading a request in the event loop ------------------------------------------------------------

    def enqueue_req(self, conn: Any) -> None:
        if isinstance(conn, _Conn):
            # A kept-alive connection with its next request: read that in the loop too. Bytes a body
            # drain read ahead sit in the parser's buffer; start from them.
            ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
            self._start_reading(conn, ahead)
            return
        super().enqueue_req(conn)

    def _start_reading(self, conn: _Conn, ahead: bytes) -> None:
        conn.sock.setblocking(False)
        conn.buffer = bytearray(ahead)
        conn.deadline = time.monotonic() + self.limits.header_timeout
        conn.body_deadline = 0.0
        if ahead and self._complete(conn):
            self._hand_over(conn)
            return
        self._reading[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: _Conn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.buffer += data
        if self._complete(conn):
            self.poller.unregister(conn.sock)
            del self._reading[conn]
            self._hand_over(conn)
        elif conn.body_deadline == 0.0 and len(conn.buffer) > _MAX_HEADER_BYTES:
            self._drop(conn, _TOO_LARGE_ANSWER)

    def _complete(self, conn: _Conn) -> bool:
        """Whether the buffer holds the whole request head (and a small body, when announced)."""
        buffer = conn.buffer
        end = buffer.find(_END)
        if end < 0:
            return False
        head = bytes(buffer[:end + 2])
        if _CHUNKED.search(head):
            return True   # streamed by the request thread
        length = _LENGTH.search(head)
        size = int(length.group(1)) if length else 0
        if size > self.limits.prefetch_bytes:
            return True   # large uploads are read by the request thread
        if len(buffer) - (end + 4) >= size:
            return True
        if conn.body_deadline == 0.0:
            conn.body_deadline = time.monotonic() + self.limits.body_timeout
        return False

    def _hand_over(self, conn: _Conn) -> None:
        conn.sock.setblocking(True)
        conn.init()
        conn.parser.unreader.unread(bytes(conn.buffer))
        conn.buffer = bytearray()
        conn.data_ready = True
        super().enqueue_req(conn)   # gthread's own: straight to a request thread

    def _drop(self, conn: _Conn, answer: bytes | None = None) -> None:
        if conn in self._reading:
            del self._reading[conn]
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        if answer is not None:
            try:
                conn.sock.send(answer)
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self._reading if (c.body_deadline or c.deadline) < now]:
            # A kept-alive connection that sent nothing closes quietly, as gthread's own do.
            self._drop(conn, _TIMEOUT_ANSWER if conn.buffer else None)


def _refuse(sock: socket.socket, answer: bytes) -> None:
    try:
        sock.setblocking(False)
        sock.send(answer)
    except OSError:
        pass
    finally:
        sock.close()
