"""Who may call a private model's runtime: the tokens file the server keeps next to it.

The server never hands a runtime a token, only what it needs to check one: a JSON file,

    {"public": false, "tokens": {"<sha256 hex of a token>": "predict", ...}}

written atomically (a new file renamed over the old) whenever tokens are created or revoked. With
``GAZELLE_RUNTIME_TOKENS_FILE`` set, every request except the health probes (``/v2/health/live``,
``/v2/health/ready``) and ``/metrics`` needs ``Authorization: Bearer <token>`` whose hash is listed
(every scope includes ``predict``), unless the file says ``"public": true``. The file is looked at
(one ``stat``) at most once every ``RECHECK_SECONDS`` per worker and read again only when it changed,
so a revoked token is refused at most ``RECHECK_SECONDS`` after the server rewrote the file. A file
that is missing or unreadable refuses every token: a private model never opens by accident.
Without the variable (``gazelle runtime BUNDLE`` on its own) the runtime answers everyone.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Callable, Mapping

RECHECK_SECONDS = 1.0
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
SCOPES = frozenset({"predict", "deploy", "admin"})


class TokenFile:
    """The accepted token hashes, from ``path``; see the module docstring."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._stamp: tuple[int, int, int] | None = None
        self._public = False
        self._hashes: frozenset[str] = frozenset()

    def allows(self, authorization: str | None) -> bool:
        """Whether a request with this Authorization header value may be answered."""
        self._refresh()
        if self._public:
            return True
        token = _bearer(authorization)
        if token is None:
            return False
        return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest() in self._hashes

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._checked < RECHECK_SECONDS:
            return
        with self._lock:
            if now - self._checked < RECHECK_SECONDS:
                return
            self._checked = now
            try:
                info = os.stat(self.path)
            except OSError:
                self._set(None, False, frozenset())
                return
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return
            public, hashes = read(self.path)
            self._set(stamp, public, hashes)

    def _set(self, stamp: tuple[int, int, int] | None, public: bool, hashes: frozenset[str]) -> None:
        self._stamp, self._public, self._hashes = stamp, public, hashes


def read(path: str) -> tuple[bool, frozenset[str]]:
    """``(public, hashes)`` from a tokens file; ``(False, empty)`` when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except (OSError, ValueError):
        return False, frozenset()
    if not isinstance(document, dict):
        return False, frozenset()
    tokens = document.get("tokens")
    hashes = frozenset(h for h, scope in tokens.items() if isinstance(h, str) and scope in SCOPES) \
        if isinstance(tokens, dict) else frozenset()
    return document.get("public") is True, hashes


def render(public: bool, tokens: Mapping[str, str]) -> bytes:
    """The tokens file for ``tokens`` (sha256 hex -> scope), as the server writes it."""
    return json.dumps({"public": bool(public), "tokens": dict(sorted(tokens.items()))}).encode()


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    kind, _, value = header.strip().partition(" ")
    value = value.strip()
    return value if kind.lower() == "bearer" and value else None
