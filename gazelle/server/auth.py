"""API tokens: random secrets stored as sha256 hashes, each with one scope.

Scopes nest: ``admin`` ⊇ ``deploy`` ⊇ ``predict``. A token is shown once, when it is created (and the
first admin token is written to ``{data_dir}/token``, mode 0600); the server keeps only its hash, and
no token ever reaches a log line, a job event or an error message.

Verified hashes are cached in memory for ``CACHE_SECONDS`` (5 s): the gateway checks a token on every
prediction. A revoked token stops working at once in the server process that revoked it (its cache
entry goes) and within ``CACHE_SECONDS`` in every other process sharing the database. A revoked
token's row is kept, so a token file holding it is replaced by a new token, never registered again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any, Callable, TypeVar

import sqlalchemy as sa

from gazelle.errors import BadRequest, ConfigError, Forbidden, Unauthorized
from gazelle.server.store import Store, TokenRow

log = logging.getLogger("gazelle.server")

SCOPES = ("predict", "deploy", "admin")
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
CACHE_SECONDS = 5.0
MAX_NAME = 200

F = TypeVar("F", bound=Callable[..., Any])


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_scope(scope: object) -> str:
    if not isinstance(scope, str) or scope not in _RANK:
        shown = json.dumps(scope) if isinstance(scope, (dict, list, int, float, bool, type(None))) else repr(scope)
        raise BadRequest(f"scope: must be one of {', '.join(SCOPES)}, got {shown}")
    return scope


def check_name(name: object) -> str:
    """A token label: 1 to ``MAX_NAME`` characters, none of them a control character or line break."""
    if not isinstance(name, str):
        raise BadRequest(f"name: expected a string, got {json.dumps(name)}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("name: is not valid text (it holds a lone surrogate)") from None
    if not name or len(name) > MAX_NAME:
        raise BadRequest(f"name: expected 1 to {MAX_NAME} characters, got {len(name)}")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in name):
        raise BadRequest("name: must not hold control characters or line breaks")
    return name


def allows(row: TokenRow, scope: str) -> bool:
    """True if the token ``row`` has at least ``scope``."""
    return _RANK[row.scope] >= _RANK[scope]


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    kind, _, value = header.strip().partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Auth:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock          # what the cache's lifetime is measured with
        self._cache: dict[str, tuple[TokenRow, float]] = {}
        self._lock = threading.Lock()

    def create_token(self, scope: str, name: str | None = None) -> tuple[str, TokenRow]:
        """A new random token with ``scope``: ``(token, row)``. Only the hash is stored."""
        scope = check_scope(scope)
        token = "gz_" + secrets.token_urlsafe(32)
        row = self.store.add_token(check_name(name) if name is not None else f"{scope} token", scope,
                                   hash_token(token))
        return token, row

    def revoke(self, token_id: int) -> TokenRow | None:
        """Revoke token ``token_id``: refused from now on here, within ``CACHE_SECONDS`` elsewhere."""
        row = self.store.revoke_token(token_id)
        with self._lock:
            for digest in [d for d, (cached, _) in self._cache.items() if cached.id == token_id]:
                del self._cache[digest]
        return row

    def ensure_admin(self, path: Path, given: str | None) -> None:
        """The server's admin token: ``given`` (``GAZELLE_ADMIN_TOKEN``, which several replicas share)
        when set, and then no token file is written; otherwise the one in ``path``, made once. Without
        this, every new replica's pod would register an admin token of its own and keep it on its disk."""
        if given:
            self.ensure_given_admin_token(given)
        else:
            self.ensure_admin_token(path)

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
            if token and self.store.token_revoked(hash_token(token)):
                _replace_token_file(path, self._new_admin_token())
                log.warning("the admin token in %s was revoked; wrote a new one there", path)
                return True
            if token and self.store.token_by_hash(hash_token(token)) is None:
                self.store.add_token("admin (token file)", "admin", hash_token(token))
                log.info("registered the admin token found in %s", path)
            return False
        # The hash goes in first: a client that reads the file must find a working token.
        token = self._new_admin_token()
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log.info("created an admin token in %s", path)
        return True

    def ensure_gateway_token(self, token: str) -> None:
        """Register the hash of the token this server's processes show runtimes (predict scope), so the
        tokens every replica hands its runtimes include every replica's gateway token."""
        self._register(token, "gateway (server processes)", "predict")

    def ensure_given_admin_token(self, token: str) -> bool:
        """Register ``token`` (``GAZELLE_ADMIN_TOKEN``) as an admin token unless known; True if added.

        A token revoked through the API stays revoked: a new one goes into the setting's Secret.
        """
        if len(token) < 16:
            raise ConfigError("GAZELLE_ADMIN_TOKEN must be at least 16 characters long")
        added = self._register(token, "admin (GAZELLE_ADMIN_TOKEN)", "admin")
        if added:
            log.info("registered the admin token from GAZELLE_ADMIN_TOKEN")
        return added

    def _register(self, token: str, name: str, scope: str) -> bool:
        """Add ``token``'s hash unless it is known (or was revoked, which stays); True if added. Another
        process of a server sharing the store may register it at the same moment: that is no error."""
        token_hash = hash_token(token)
        if self.store.token_by_hash(token_hash) is not None or self.store.token_revoked(token_hash):
            return False
        try:
            self.store.add_token(name, scope, token_hash)
        except sa.exc.IntegrityError:
            return False
        return True

    def _new_admin_token(self) -> str:
        token = "gz_" + secrets.token_urlsafe(32)
        self.store.add_token("admin (token file)", "admin", hash_token(token))
        return token

    def identify(self, header: str | None) -> TokenRow:
        """The token row behind an Authorization header; Unauthorized if missing or unknown."""
        token = bearer(header)
        if token is None:
            raise Unauthorized("this call needs a token: send the header 'Authorization: Bearer <token>'",
                               hint="a local server writes its admin token to the file 'token' in its data directory")
        digest = hash_token(token)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = self.store.token_by_hash(digest)
        if row is None:
            raise Unauthorized("unknown token", hint="create one with `gazelle token create --scope deploy`")
        self.store.touch_token(row)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (row, now + CACHE_SECONDS)
        return row

    def check(self, header: str | None, scope: str, action: str) -> TokenRow:
        """The caller's token if it has at least ``scope``; ``action`` names the call in the 403."""
        row = self.identify(header)
        if not allows(row, scope):
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


def _replace_token_file(path: Path, token: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".token-")   # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def require(auth_of: Callable[[], Auth], scope: str) -> Callable[[F], F]:
    """View decorator: the request needs a token with ``scope``; its row is then ``flask.g.gazelle_token``."""
    import functools

    from flask import g, request

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # The view may show more to a token with a wider scope (job logs to deploy tokens).
            g.gazelle_token = auth_of().check(request.headers.get("Authorization"), scope,
                                              f"{request.method} {request.path}")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
