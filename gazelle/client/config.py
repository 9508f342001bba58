"""Which build server the client talks to, and with which token.

Resolution, first match wins, separately for the server and the token:

1. the ``server=`` / ``token=`` argument of the call;
2. what :func:`configure` set in this process;
3. the ``GAZELLE_SERVER`` / ``GAZELLE_TOKEN`` environment variables;
4. the local server: ``http://127.0.0.1:8000`` and the admin token it wrote on first start, read
   from ``$GAZELLE_DATA_DIR/token`` (default ``~/.gazelle/token``).

The token file is read only when the server is on this machine (a loopback address): a local admin
token is never sent to another host. The token is kept out of every ``repr`` and message.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gazelle.errors import ConfigError

LOCAL_SERVER = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Connection:
    """A server URL and the token to present to it (never shown in ``repr``)."""

    server: str
    token: str | None = field(default=None, repr=False)
    transport: Any = field(default=None, repr=False, compare=False)   # an httpx transport, for tests


_configured: dict[str, Any] = {"server": None, "token": None, "transport": None}


def configure(server: str | None = None, token: str | None = None, *, transport: Any = None) -> None:
    """Set the server and token that later calls in this process use by default.

    ``configure()`` with no arguments forgets what was set before. ``transport`` is an httpx
    transport to send requests through (``httpx.WSGITransport(app=...)`` runs the client against
    an in-process server).
    """
    if server is not None:
        check_server_url(server)
    _configured.update(server=server, token=token, transport=transport)


def data_dir() -> Path:
    """The local server's state directory: ``$GAZELLE_DATA_DIR``, else ``~/.gazelle``."""
    env = os.environ.get("GAZELLE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".gazelle"


def check_server_url(url: str) -> str:
    """Return ``url`` without a trailing slash, or raise ConfigError if it is not an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"server URL {url!r} is not an http(s) URL",
                          hint="use e.g. http://127.0.0.1:8000")
    if parts.username or parts.password:
        raise ConfigError("server URL must not carry credentials", hint="pass the token with token= or GAZELLE_TOKEN")
    return url.rstrip("/")


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token_file(path: Path | None = None) -> str | None:
    """The local server's admin token, or None if there is no readable token file."""
    path = path or data_dir() / "token"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def resolve(server: str | None = None, token: str | None = None) -> Connection:
    """The connection a call with these arguments uses (see the module docstring for the order)."""
    url = server or _configured["server"] or os.environ.get("GAZELLE_SERVER") or LOCAL_SERVER
    url = check_server_url(url)
    secret = token or _configured["token"] or os.environ.get("GAZELLE_TOKEN") or None
    if secret is None and is_loopback(url):
        secret = read_token_file()
    return Connection(server=url, token=secret, transport=_configured["transport"])
