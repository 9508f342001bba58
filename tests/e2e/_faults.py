"""A small HTTP proxy in front of a real registry that answers chosen requests with a 500 itself, or
(``drop=True``) closes the connection without answering.

Only the faults are made up: every other request goes to the real registry and back unchanged (the
Host header is kept, so the registry's upload Locations point at the proxy again).
"""
from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from contextlib import contextmanager
from typing import Callable, Iterator

# (method, path) -> True: answer this request with a 500 instead of forwarding it.
Fault = Callable[[str, str], bool]
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    def __init__(self, upstream: str, fault: Fault, *, drop: bool = False) -> None:
        self.upstream = upstream
        self.fault = fault
        self.drop = drop
        self.injected: list[tuple[str, str]] = []
        self.forwarded: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:   # quiet: pytest shows failures, not traffic
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    fail = proxy.fault(self.command, self.path)
                    (proxy.injected if fail else proxy.forwarded).append((self.command, self.path))
                if fail and proxy.drop:
                    self.close_connection = True
                    return
                if fail:
                    payload = b'{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}'
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def fault_proxy(upstream: str, fault: Fault, *, drop: bool = False) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, fault, drop=drop)
    thread = threading.Thread(target=proxy.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
        thread.join(timeout=10)


def first_only(method: str, marker: str) -> Fault:
    """Fail the first request with ``method`` whose path contains ``marker``; forward the rest."""
    seen = {"count": 0}

    def fault(got_method: str, path: str) -> bool:
        if got_method == method and marker in path:
            seen["count"] += 1
            return seen["count"] == 1
        return False

    return fault
