"""Registry credentials: a ``Keychain`` answers "who am I at this registry host?".

Credentials never travel as arguments to a push and never come from a bundle. Sources, in the order
``default_keychain`` asks them:

1. docker's ``config.json`` (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):
   ``credHelpers[host]`` (``docker-credential-<name> get``), then ``auths[host]`` (``auth`` =
   base64 ``user:password``, or ``identitytoken``), then ``credsStore`` for any host;
2. the settings ``GAZELLE_REGISTRY_USER`` / ``GAZELLE_REGISTRY_PASSWORD``, for the configured
   registry host only.

Files are read and helpers run when a host is looked up, never at construction. A helper that
fails or answers nonsense means "no credentials here": the registry's 401 then names the host.
``Credentials`` keeps its secrets out of ``repr``.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# docker keeps Docker Hub's credentials under its v1 index URL.
_HUB_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HELPER_TIMEOUT = 30


@dataclass(frozen=True)
class Credentials:
    """A user and password (basic auth, or what a token endpoint takes), or an identity (refresh) token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)


class Keychain(Protocol):
    def credentials(self, registry: str) -> Credentials | None:
        """Credentials for ``registry`` (host[:port]), or None for anonymous access."""
        ...


class StaticKeychain:
    """One user and password for one registry host (or every host when ``registry`` is None)."""

    def __init__(self, registry: str | None, username: str, password: str) -> None:
        self.registry = registry
        self._credentials = Credentials(username, password)

    def credentials(self, registry: str) -> Credentials | None:
        if self.registry is None or _same_host(self.registry, registry):
            return self._credentials
        return None


class DockerConfigKeychain:
    """Credentials from docker's ``config.json`` and its credential helpers (see the module docstring)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path

    def config_path(self) -> Path:
        if self.path is not None:
            return self.path
        base = os.environ.get("DOCKER_CONFIG")
        return (Path(base) if base else Path.home() / ".docker") / "config.json"

    def credentials(self, registry: str) -> Credentials | None:
        try:
            config = json.loads(self.config_path().read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(config, dict):
            return None
        keys = _lookup_keys(registry)
        helpers = config.get("credHelpers") or {}
        for key in keys:
            if isinstance(helpers, dict) and helpers.get(key):
                return _from_helper(str(helpers[key]), key)
        auths = config.get("auths") or {}
        for stored, entry in (auths.items() if isinstance(auths, dict) else ()):
            if _normalize(stored) in keys and isinstance(entry, dict):
                found = _from_auth_entry(entry)
                if found is not None:
                    return found
        store = config.get("credsStore")
        return _from_helper(str(store), keys[0]) if store else None


class ChainKeychain:
    """The first keychain that has credentials for a host wins."""

    def __init__(self, *keychains: Keychain) -> None:
        self.keychains = keychains

    def credentials(self, registry: str) -> Credentials | None:
        for keychain in self.keychains:
            found = keychain.credentials(registry)
            if found is not None:
                return found
        return None


def default_keychain(registry: str | None, username: str | None, password: str | None) -> Keychain:
    """docker's config first, then the settings' user and password for the configured ``registry``."""
    chain: list[Keychain] = [DockerConfigKeychain()]
    if username and password:
        chain.append(StaticKeychain(registry_host(registry) if registry else None, username, password))
    return ChainKeychain(*chain)


def registry_host(name: str) -> str:
    """``host[:port]/prefix`` -> ``host[:port]``."""
    return name.split("/", 1)[0]


def _normalize(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000``; Docker Hub's aliases -> its v1 index key."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return _HUB_KEY if host in _HUB_HOSTS else host


def _lookup_keys(registry: str) -> list[str]:
    host = _normalize(registry)
    return [_HUB_KEY, *_HUB_HOSTS] if host == _HUB_KEY else [host]


def _same_host(a: str, b: str) -> bool:
    return _normalize(registry_host(a)) == _normalize(registry_host(b))


def _from_auth_entry(entry: dict[str, Any]) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials(str(entry.get("username") or ""), identity_token=str(entry["identitytoken"]))
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]))
    if entry.get("auth"):
        try:
            user, sep, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return Credentials(user, password) if sep else None
    return None


def _from_helper(name: str, server: str) -> Credentials | None:
    """``docker-credential-<name> get`` with the server on stdin; its JSON answer, or None."""
    try:
        got = subprocess.run([f"docker-credential-{name}", "get"], input=server, capture_output=True,
                             text=True, timeout=_HELPER_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if got.returncode != 0:
        return None
    try:
        answer = json.loads(got.stdout)
    except ValueError:
        return None
    if not isinstance(answer, dict) or not answer.get("Secret"):
        return None
    user, secret = str(answer.get("Username") or ""), str(answer["Secret"])
    # docker's convention: a helper that stores an identity token answers with the user "<token>".
    if user == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(user, secret)
