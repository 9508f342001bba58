"""API tokens: random secrets stored as sha256 hashes, each with one scope.

Scopes nest: ``admin`` ⊇ ``deploy`` ⊇ ``predict``. A token is shown once, when it is created (and the
first admin token is written to ``{data_dir}/token``, mode 0600); the server keeps only its hash, and
no token ever reaches a log line, a job event or an error message.

Verified hashes are cached in memory for a short while: the gateway checks a token on every prediction.
Tokens cannot be revoked yet; when they can, the cache lifetime bounds how long a revoked one still works.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from gazelle.errors import BadRequest, Forbidden, Unauthorized
from gazelle.server.store import Store, TokenRow

log = logging.getLogger("gazelle.server")

SCOPES = ("predict", "deploy", "admin")
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
CACHE_SECONDS = 30.0

F = TypeVar("F", bound=Callable[..., Any])


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_scope(scope: object) -> str:
    if scope not in _RANK:
        raise BadRequest(f"scope: must be one of {', '.join(SCOPES)}, got {scope!r}")
    assert isinstance(scope, str)
    return scope


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    kind, _, value = header.strip().partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Auth:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[TokenRow, float]] = {}
        self._lock = threading.Lock()

    def create_token(self, scope: str, name: str | None = None) -> tuple[str, TokenRow]:
        """A new random token with ``scope``: ``(token, row)``. Only the hash is stored."""
        scope = check_scope(scope)
        token = "gz_" + secrets.token_urlsafe(32)
        row = self.store.add_token(name or f"{scope} token", scope, hash_token(token))
        return token, row

    def ensure_admin_token(self, path: Path) -> bool:
        """Create the first admin token in ``path`` (0600) unless that file exists; True if created.

        An existing file the database does not know (a new database, same data directory) is registered,
        so the local client's token keeps working.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            token = _read_token_file(path)
            if token and self.store.token_by_hash(hash_token(token)) is None:
                self.store.add_token("admin (token file)", "admin", hash_token(token))
                log.info("registered the admin token found in %s", path)
            return False
        token = "gz_" + secrets.token_urlsafe(32)
        # The hash goes in first: a client that reads the file must find a working token.
        self.store.add_token("admin (token file)", "admin", hash_token(token))
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log.info("created an admin token in %s", path)
        return True

    def identify(self, header: str | None) -> TokenRow:
        """The token row behind an Authorization header; Unauthorized if missing or unknown."""
        token = bearer(header)
        if token is None:
            raise Unauthorized("this call needs a token: send the header 'Authorization: Bearer <token>'",
                               hint="a local server writes its admin token to the file 'token' in its data directory")
        digest = hash_token(token)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = self.store.token_by_hash(digest)
        if row is None:
            raise Unauthorized("unknown token", hint="create one with `gazelle token create --scope deploy`")
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (row, now + CACHE_SECONDS)
        return row

    def check(self, header: str | None, scope: str, action: str) -> TokenRow:
        """The caller's token if it has at least ``scope``; ``action`` names the call in the 403."""
        row = self.identify(header)
        if _RANK[row.scope] < _RANK[scope]:
            raise Forbidden(f"{action} needs a token with scope '{scope}'; this token has scope '{row.scope}'")
        return row

    def authorize_predict(self, route: Any) -> None:
        """For the gateway: pass public models; others need a predict token, from the Authorization
        header or the browser sign-in cookie (reads flask.request)."""
        if getattr(route, "public", False):
            return
        from gazelle.server.gateway import presented_authorization

        self.check(presented_authorization(), "predict", f"model {getattr(route, 'name', '?')}")


def _read_token_file(path: Path) -> str:
    # A server starting at the same moment may still be writing it.
    for _ in range(50):
        token = path.read_text().strip()
        if token:
            return token
        time.sleep(0.02)
    return ""


def require(auth_of: Callable[[], Auth], scope: str) -> Callable[[F], F]:
    """View decorator: the request needs a token with ``scope``."""
    import functools

    from flask import request

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            auth_of().check(request.headers.get("Authorization"), scope,
                            f"{request.method} {request.path}")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
