"""A fault-injecting, byte-counting HTTP/1.1 proxy on loopback, in front of a real registry.

``FaultProxy("127.0.0.1:5000")`` listens on ``127.0.0.1:<free port>`` (``.host``) in a background
thread and forwards every request to the upstream unchanged, the ``Host`` header included, so the
registry's ``Location`` headers point back at the proxy and a whole upload goes through it. Bodies
are streamed both ways, never buffered. Every exchange is recorded (method, target, request and
response body bytes, status), so a test can show what went up: ``bytes_sent("PATCH", "/blobs/")``,
``uploaded_blobs()`` (digest -> bytes, across POST/PATCH/PUT of each upload session).

Faults, armed per method and a regular expression searched in the request target (path and query):
``fail("PATCH", r"/blobs/uploads/", after=1)`` answers the second matching request with a 500 and a
registry-style error body, once (``times``); ``drop(...)`` reads the request and closes the connection
without an answer. A faulted request never reaches the registry. Each returns its ``Fault``, whose
``fired`` says how often it struck.

This is a real TCP proxy, not a mock: client and registry speak real HTTP over real sockets; only the
faults are made up. Limits: plain HTTP/1.1 (no TLS, CONNECT or HTTP/2), one upstream; request bodies
framed by Content-Length or chunked (``Expect: 100-continue`` is answered by the proxy itself);
response bodies by Content-Length, chunked or connection close. For tests only.
"""
from __future__ import annotations

import json
import re
import select
import socket
import socketserver
import threading
from dataclasses import dataclass
from io import BufferedReader
from typing import Union

MAX_HEAD = 64 * 1024
IO_TIMEOUT = 120.0
BLOCK = 64 * 1024
_UPLOAD = re.compile(r"^(/v2/.+/blobs/uploads/[^/?]*)")
_DIGEST_PARAM = re.compile(r"[?&]digest=([^&]+)")


@dataclass(frozen=True)
class Exchange:
    """One request as the proxy saw it. ``status`` is None when the connection was dropped;
    ``fault`` says what was injected ("status 500", "drop"), None for a forwarded request."""

    method: str
    target: str
    sent: int
    received: int
    status: int | None
    fault: str | None = None

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass
class Fault:
    """Strikes the requests matching ``method`` and ``pattern`` after the first ``after`` of them,
    ``times`` times. ``status`` None means: drop the connection."""

    method: str
    pattern: re.Pattern[str]
    status: int | None
    times: int
    after: int
    seen: int = 0
    fired: int = 0

    def strikes(self, method: str, target: str) -> bool:
        """Counts a match; True when this match is one to fault (call under the proxy's lock)."""
        if self.method not in ("*", method) or not self.pattern.search(target):
            return False
        self.seen += 1
        if self.seen > self.after and self.fired < self.times:
            self.fired += 1
            return True
        return False


@dataclass
class _Request:
    method: str
    target: str
    head: bytes                 # request line and headers as they go upstream
    length: int | None          # Content-Length, or None
    chunked: bool
    close: bool                 # the client asked to close after this exchange
    expect_continue: bool


class FaultProxy:
    """See the module docstring. Use as a context manager, or ``start()`` / ``close()``."""

    def __init__(self, upstream: str, *, listen: str = "127.0.0.1", port: int = 0) -> None:
        """``port`` 0: a free one; another that is taken raises OSError."""
        host, _, up_port = upstream.rpartition(":")
        self.upstream = (host, int(up_port))
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._exchanges: list[Exchange] = []
        self._sockets: set[socket.socket] = set()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((listen, port), Handler, bind_and_activate=True)
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """host:port to give a client in place of the registry's."""
        addr = self._server.server_address
        return f"{addr[0]}:{addr[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> "FaultProxy":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name=f"faultproxy-{self.host}",
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        with self._lock:
            for s in list(self._sockets):
                _close(s)
            self._sockets.clear()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- faults and records ---------------------------------------------------------------------

    def fail(self, method: str, pattern: str, *, status: int = 500, times: int = 1, after: int = 0) -> Fault:
        """Answer matching requests (``method`` or "*") with ``status`` instead of forwarding them."""
        return self._arm(Fault(method.upper() if method != "*" else "*", re.compile(pattern), status,
                               times, after))

    def drop(self, method: str, pattern: str, *, times: int = 1, after: int = 0) -> Fault:
        """Read matching requests, then close the connection without an answer."""
        return self._arm(Fault(method.upper() if method != "*" else "*", re.compile(pattern), None,
                               times, after))

    def _arm(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget the faults and the records."""
        with self._lock:
            self._faults.clear()
            self._exchanges.clear()

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def requests(self, method: str = "*", pattern: str = "") -> list[Exchange]:
        """The recorded exchanges whose method (or "*") and target (regular expression) match."""
        rx = re.compile(pattern)
        return [e for e in self.exchanges if method in ("*", e.method) and rx.search(e.target)]

    def bytes_sent(self, method: str = "*", pattern: str = "") -> int:
        """Request body bytes of the matching exchanges (faulted ones included: they went out)."""
        return sum(e.sent for e in self.requests(method, pattern))

    def uploaded_blobs(self) -> dict[str, int]:
        """digest -> request body bytes of each blob upload the registry completed (201), summed over
        the session's POST, PATCH and PUT requests, retried and faulted ones included."""
        sessions: dict[str, int] = {}
        done: dict[str, int] = {}
        for e in self.exchanges:
            m = _UPLOAD.match(e.target)
            if not m:
                continue
            # POST opens a session at .../uploads/ (or uploads it whole with ?digest=); the rest
            # address .../uploads/<id>
            session = m.group(1)
            sessions[session] = sessions.get(session, 0) + e.sent
            digest = _DIGEST_PARAM.search(e.target)
            if digest and e.status == 201:
                key = digest.group(1).replace("%3A", ":").replace("%3a", ":")
                done[key] = done.get(key, 0) + sessions.pop(session)
        return done

    # --- the proxy ------------------------------------------------------------------------------

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)

    def _fault_for(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.strikes(method, target):
                    return fault
        return None

    def _track(self, s: socket.socket, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(s)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(IO_TIMEOUT)
        self._track(client, True)
        upstream: socket.socket | None = None
        up_reader: BufferedReader | None = None
        reader = client.makefile("rb")
        try:
            while True:
                req = _read_request(reader)
                if req is None:
                    return
                if req.expect_continue:
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                fault = self._fault_for(req.method, req.target)
                if fault is not None:
                    sent = _copy_body(reader, None, req)
                    if fault.status is None:
                        self._record(Exchange(req.method, req.target, sent, 0, None, "drop"))
                        return
                    self._record(Exchange(req.method, req.target, sent, 0, fault.status,
                                          f"status {fault.status}"))
                    client.sendall(_error_response(fault.status))
                    if req.close:
                        return
                    continue
                if upstream is None or _peer_closed(upstream):
                    if upstream is not None:
                        self._track(upstream, False)
                        _close(upstream)
                        up_reader = None
                    upstream = socket.create_connection(self.upstream, timeout=IO_TIMEOUT)
                    self._track(upstream, True)
                    up_reader = upstream.makefile("rb")
                assert up_reader is not None
                upstream.sendall(req.head)
                sent = _copy_body(reader, upstream, req)
                out = _HoldLast(client)
                status, received, keep = _relay_response(up_reader, out, req.method)
                # recorded before the answer's last bytes go out: a client holding the whole answer
                # finds its exchange in the records
                self._record(Exchange(req.method, req.target, sent, received, status))
                out.flush()
                # an upstream that closes (or sends no answer) closes the client's connection too:
                # its Connection: close went to the client, or the client got nothing to wait for
                if not keep or req.close:
                    return
        except (OSError, ValueError):
            return   # a client or upstream that went away mid-exchange ends this connection only
        finally:
            reader.close()
            if upstream is not None:
                self._track(upstream, False)
                _close(upstream)
            self._track(client, False)
            _close(client)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def _peer_closed(s: socket.socket) -> bool:
    """True when an idle keep-alive connection was closed by the upstream (readable at EOF)."""
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return False
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _read_head(reader: BufferedReader) -> list[bytes] | None:
    """The start line and header lines (without CRLF), or None at a clean EOF before any byte."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = reader.readline(MAX_HEAD + 1)
        if not line:
            if lines:
                raise ValueError("connection closed inside a message head")
            return None
        size += len(line)
        if size > MAX_HEAD:
            raise ValueError("message head too large")
        line = line.rstrip(b"\r\n")
        if not line:
            if lines:
                return lines
            continue   # tolerate blank lines between messages (RFC 9112 2.2)
        lines.append(line)


def _headers(lines: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ValueError(f"malformed header line {line!r}")
        out.append((name.strip(), value.strip()))
    return out


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _read_request(reader: BufferedReader) -> _Request | None:
    lines = _read_head(reader)
    if lines is None:
        return None
    method, target, version = lines[0].decode("latin-1").split(" ", 2)
    headers = _headers(lines[1:])
    te = (_get(headers, "transfer-encoding") or "").lower()
    length = _get(headers, "content-length")
    conn = (_get(headers, "connection") or "").lower()
    expect = (_get(headers, "expect") or "").lower() == "100-continue"
    kept = [line for line, (k, _) in zip(lines[1:], headers) if k.lower() != "expect"]
    head = b"\r\n".join([lines[0], *kept]) + b"\r\n\r\n"
    return _Request(method, target, head, int(length) if length is not None and "chunked" not in te else None,
                    "chunked" in te, "close" in conn or version == "HTTP/1.0", expect)


class _HoldLast:
    """A sink that sends each piece only when the next one comes (or at ``flush``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.held = b""

    def sendall(self, data: bytes) -> None:
        if self.held:
            self.sock.sendall(self.held)
        self.held = data

    def flush(self) -> None:
        if self.held:
            self.sock.sendall(self.held)
            self.held = b""


_Sink = Union[socket.socket, _HoldLast]


def _copy_exact(src: BufferedReader, dst: _Sink | None, n: int) -> None:
    while n > 0:
        block = src.read(min(n, BLOCK))
        if not block:
            raise ValueError("connection closed inside a body")
        if dst is not None:
            dst.sendall(block)
        n -= len(block)


def _copy_chunked(src: BufferedReader, dst: _Sink | None) -> int:
    """Forward a chunked body as it is framed; returns the payload bytes."""
    total = 0
    while True:
        line = src.readline(MAX_HEAD)
        if not line:
            raise ValueError("connection closed inside a chunked body")
        if dst is not None:
            dst.sendall(line)
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:   # trailers, up to the blank line
                trailer = src.readline(MAX_HEAD)
                if dst is not None:
                    dst.sendall(trailer)
                if trailer in (b"\r\n", b"\n", b""):
                    return total
        _copy_exact(src, dst, size + 2)
        total += size


def _copy_body(src: BufferedReader, dst: socket.socket | None, req: _Request) -> int:
    if req.chunked:
        return _copy_chunked(src, dst)
    if req.length:
        _copy_exact(src, dst, req.length)
        return req.length
    return 0


def _relay_response(up: BufferedReader, client: _HoldLast, method: str) -> tuple[int | None, int, bool]:
    """Relay one response (after any 1xx); returns (status, body bytes, keep the connections).
    The last piece stays held in ``client`` until the caller flushes it."""
    while True:
        lines = _read_head(up)
        if lines is None:
            return None, 0, False
        status = int(lines[0].split(b" ", 2)[1])
        client.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        if not 100 <= status < 200 or status == 101:
            break
        client.flush()
    headers = _headers(lines[1:])
    keep = "close" not in (_get(headers, "connection") or "").lower()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, 0, keep
    if "chunked" in (_get(headers, "transfer-encoding") or "").lower():
        return status, _copy_chunked(up, client), keep
    length = _get(headers, "content-length")
    if length is not None:
        _copy_exact(up, client, int(length))
        return status, int(length), keep
    received = 0   # framed by close
    while block := up.read1(BLOCK):
        client.sendall(block)
        received += len(block)
    return status, received, False


def _error_response(status: int) -> bytes:
    """A registry-style error answer (distribution's ``{"errors": [...]}``)."""
    body = json.dumps({"errors": [{"code": "UNKNOWN", "message": f"fault injected by the test proxy ({status})",
                                   "detail": {}}]}).encode()
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
              429: "Too Many Requests"}.get(status, "Injected")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Docker-Distribution-Api-Version: registry/2.0\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body

