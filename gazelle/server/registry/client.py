"""The OCI distribution protocol, one HTTP exchange at a time: auth, retries, typed errors.

``RegistryClient`` speaks to any registry host; each call names the host and the repository. Auth
follows the ``WWW-Authenticate`` challenge of the first 401 from a host, as Docker Hub, GHCR and ACR
use it: ``Basic`` sends the keychain's user and password; ``Bearer`` asks the challenge's ``realm``
for a token for the call's scopes (GET with basic auth, or an OAuth2 refresh-token POST for an
identity token) and caches it per host and scope set. ``http://`` is used for 127.0.0.1, localhost,
[::1] and the hosts in ``insecure``; https for every other host.

Retries: a dropped connection, 408, 429 and 5xx are retried ``retries`` times with exponential
backoff; blob uploads are restarted as a whole (a half-sent chunk cannot be resumed safely). Every
failure is one ``RegistryError`` carrying the status, the registry's error code, whether a retry may
help, and the URL without credentials or query values (upload URLs carry signed state).

Written on httpx rather than on oras-py (the Python ORAS client): oras-py is built on requests and
around artifact push/pull; it has no cross-repository mount, no per-scope token cache and raises
requests' exceptions, which would have to be wrapped anyway; httpx is already a server dependency
and its transports let the tests put a fault-injecting proxy in the path.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import httpx

from gazelle.errors import RegistryError
from gazelle.server.registry.keychain import Credentials, Keychain

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_LOGIN_HINT = "run `docker login {host}`, or set GAZELLE_REGISTRY_USER and GAZELLE_REGISTRY_PASSWORD"


def redact(url: str | httpx.URL) -> str:
    """The URL without user info and with every query value replaced by ``***``."""
    parsed = httpx.URL(str(url))
    query = "&".join(f"{key}=***" for key, _ in parsed.params.multi_items())
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}" + (f"?{query}" if query else "")


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


class RegistryClient:
    """See the module docstring. The constructor does no I/O; ``close()`` releases connections."""

    def __init__(self, keychain: Keychain, *, insecure: Iterable[str] = (), retries: int = 3,
                 backoff: float = 0.2, timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.keychain = keychain
        self.insecure = frozenset(h.strip() for h in insecure if h.strip())
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=True)
        self._schemes: dict[str, str] = {}               # host -> "basic" | "bearer", from its challenge
        self._challenges: dict[str, dict[str, str]] = {}  # host -> bearer realm and service
        self._tokens: dict[tuple[str, str], str] = {}     # (host, scopes) -> bearer token
        self._creds: dict[str, Credentials | None] = {}    # host -> what the keychain said, asked once

    def close(self) -> None:
        self._http.close()

    def _credentials(self, host: str) -> Credentials | None:
        # A credential helper is a process: ask it once per host, not once per request.
        if host not in self._creds:
            self._creds[host] = self.keychain.credentials(host)
        return self._creds[host]

    def base_url(self, host: str) -> str:
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        insecure = bare in LOCAL_HOSTS or host in self.insecure or bare in self.insecure
        return f"{'http' if insecure else 'https'}://{host}"

    # -- one exchange --------------------------------------------------------------------------------

    def request(self, method: str, host: str, path: str, *, scopes: Sequence[str], what: str,
                ok: Iterable[int] = (200,), headers: Mapping[str, str] | None = None,
                content: bytes | None = None, params: Mapping[str, str] | None = None,
                retry: bool = True) -> httpx.Response:
        """Send one request (``path`` absolute, or relative to the host), authenticated and retried;
        any status outside ``ok`` raises a RegistryError that says it could not ``what``."""
        url = httpx.URL(path if "://" in path else self.base_url(host) + path)
        if params:
            url = url.copy_merge_params(dict(params))
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                response = self._send(method, host, url, scopes, headers or {}, content)
            except httpx.TransportError as err:
                if attempt + 1 < attempts:
                    self.pause(attempt)
                    continue
                raise RegistryError(f"registry {host} is unreachable: could not {what} "
                                    f"({_transport_reason(err)})", retryable=True, url=redact(url)) from None
            if response.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                response.close()
                self.pause(attempt)
                continue
            if response.status_code not in tuple(ok):
                raise self._error(response, host, what, scopes)
            return response
        raise AssertionError("unreachable")   # the loop returns or raises

    def pause(self, attempt: int) -> None:
        # Backoff between retries of a failed exchange (not waiting for a condition: there is none to poll).
        time.sleep(self.backoff * (2 ** attempt))

    def _send(self, method: str, host: str, url: httpx.URL, scopes: Sequence[str],
              headers: Mapping[str, str], content: bytes | None) -> httpx.Response:
        auth = self._authorization(host, scopes, fetch=False)
        response = self._http.request(method, url, headers={**headers, **auth}, content=content)
        if response.status_code != 401:
            return response
        if not self._learn(host, response.headers.get("www-authenticate", ""), scopes):
            return response   # no challenge we can answer
        if auth and self._schemes[host] == "basic":
            return response   # the password itself was refused
        # First contact, or a bearer token that expired or lacks a scope: (re)fetch it once.
        response.close()
        auth = self._authorization(host, scopes, fetch=True)
        return self._http.request(method, url, headers={**headers, **auth}, content=content)

    def _learn(self, host: str, challenge: str, scopes: Sequence[str]) -> bool:
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            self._schemes[host] = "basic"
            return True
        if scheme == "bearer":
            params = dict(_CHALLENGE_PARAM.findall(challenge))
            if not params.get("realm"):
                return False
            self._schemes[host] = "bearer"
            self._challenges[host] = {"realm": params["realm"], "service": params.get("service", ""),
                                      "scope": params.get("scope", "")}
            self._tokens.pop((host, " ".join(sorted(scopes))), None)
            return True
        return False

    def _authorization(self, host: str, scopes: Sequence[str], *, fetch: bool) -> dict[str, str]:
        scheme = self._schemes.get(host)
        if scheme == "basic":
            creds = self._credentials(host)
            if creds is None or not creds.username:
                return {}
            pair = f"{creds.username}:{creds.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        if scheme == "bearer":
            key = (host, " ".join(sorted(scopes)))
            if key not in self._tokens:
                if not fetch:
                    return {}
                self._tokens[key] = self._fetch_token(host, scopes)
            return {"Authorization": f"Bearer {self._tokens[key]}"}
        return {}

    def _fetch_token(self, host: str, scopes: Sequence[str]) -> str:
        """A bearer token for ``scopes`` from the host's token service (anonymous if no credentials)."""
        challenge = self._challenges[host]
        # A registry may name a scope the call did not think of (Docker Hub's for a library image): ask for both.
        wanted = challenge["scope"]
        scopes = [*scopes, wanted] if wanted and wanted not in scopes else list(scopes)
        creds = self._credentials(host)
        realm = httpx.URL(challenge["realm"])
        if creds is not None and realm.scheme != "https" and not self.base_url(_netloc(realm)).startswith("http:"):
            raise RegistryError(f"registry {host} sends its clients to a token service over plain http; "
                                "gazelle does not send credentials there", url=redact(realm),
                                hint="list the token service's host in GAZELLE_REGISTRY_INSECURE if that is intended")
        try:
            if creds is not None and creds.identity_token:
                response = self._http.post(realm, data={
                    "grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "service": challenge["service"], "scope": " ".join(scopes), "client_id": "gazelle"})
            else:
                query = httpx.QueryParams([("service", challenge["service"]), *(("scope", s) for s in scopes)])
                auth = (creds.username, creds.password) if creds is not None and creds.username else None
                response = self._http.get(realm, params=query, auth=auth)
        except httpx.TransportError as err:
            raise RegistryError(f"the token service of registry {host} is unreachable "
                                f"({_transport_reason(err)})", retryable=True, url=redact(realm)) from None
        if response.status_code in (401, 403):
            raise RegistryError(
                f"the token service of registry {host} refused "
                + (f"the credentials of user {creds.username}" if creds and creds.username else "anonymous access")
                + f" for {', '.join(scopes)}", status=response.status_code, registry_code="DENIED",
                url=redact(realm), hint=_LOGIN_HINT.format(host=host))
        if response.status_code != 200:
            raise RegistryError(f"the token service of registry {host} answered HTTP {response.status_code}",
                                status=response.status_code, retryable=response.status_code in RETRY_STATUSES,
                                url=redact(realm))
        try:
            body = response.json()
            return str(body.get("token") or body["access_token"])
        except (ValueError, KeyError, AttributeError):
            raise RegistryError(f"the token service of registry {host} answered without a token",
                                status=200, url=redact(realm)) from None

    def _error(self, response: httpx.Response, host: str, what: str, scopes: Sequence[str]) -> RegistryError:
        status = response.status_code
        code, message = _registry_error(response)
        url = redact(response.request.url)
        creds = self._credentials(host) if status == 401 else None
        retryable = status in RETRY_STATUSES
        if status == 401 and "insufficient_scope" in response.headers.get("www-authenticate", ""):
            return RegistryError(f"registry {host} refused access to {', '.join(scopes)}: could not {what}",
                                 status=status, registry_code=code or "DENIED", url=url,
                                 hint=_LOGIN_HINT.format(host=host))
        if status == 401:
            who = f"the credentials of user {creds.username}" if creds and creds.username else None
            sentence = f"registry {host} rejected {who}" if who else f"registry {host} needs credentials"
            return RegistryError(f"{sentence}: could not {what}", status=status, registry_code=code or "UNAUTHORIZED",
                                 url=url, hint=_LOGIN_HINT.format(host=host))
        if status == 403:
            return RegistryError(f"registry {host} denied access: could not {what}", status=status,
                                 registry_code=code or "DENIED", url=url, hint=_LOGIN_HINT.format(host=host))
        detail = f"{code}: {message}" if code else (message or response.reason_phrase)
        return RegistryError(f"registry {host} could not {what}: HTTP {status} {detail}".rstrip(), status=status,
                             registry_code=code, retryable=retryable, url=url)

    # -- operations ----------------------------------------------------------------------------------

    def manifest(self, host: str, repository: str, reference: str, accept: Sequence[str]) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, by tag or digest."""
        response = self.request("GET", host, f"/v2/{repository}/manifests/{reference}",
                                scopes=[pull_scope(repository)], what=f"read the manifest {repository}:{reference}",
                                headers={"Accept": ", ".join(accept)})
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"registry {host} answered {repository}@{reference} with a manifest whose "
                                f"digest is {digest}", status=200, url=redact(response.request.url))
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        try:
            media_type = str(json.loads(body).get("mediaType") or media_type)
        except (ValueError, AttributeError):
            pass
        return body, media_type, digest

    def blob(self, host: str, repository: str, digest: str) -> bytes:
        response = self.request("GET", host, f"/v2/{repository}/blobs/{digest}", scopes=[pull_scope(repository)],
                                what=f"read the blob {digest} of {repository}")
        if "sha256:" + hashlib.sha256(response.content).hexdigest() != digest:
            raise RegistryError(f"registry {host} answered the blob {digest} of {repository} with other bytes",
                                status=200, url=redact(response.request.url))
        return response.content

    def has_blob(self, host: str, repository: str, digest: str, scopes: Sequence[str]) -> bool:
        response = self.request("HEAD", host, f"/v2/{repository}/blobs/{digest}", scopes=scopes, ok=(200, 404),
                                what=f"check for the blob {digest} in {repository}")
        return response.status_code == 200

    def start_upload(self, host: str, repository: str, scopes: Sequence[str], *, mount: str | None = None,
                     source: str | None = None) -> str | None:
        """An upload session's URL; with ``mount``/``source``: None when the registry mounted the blob
        (201), else the session it opened instead (202: no such blob there, or mounts not allowed)."""
        params = {"mount": mount, "from": source} if mount and source else None
        response = self.request("POST", host, f"/v2/{repository}/blobs/uploads/", scopes=scopes, ok=(201, 202),
                                params=params, what=f"start an upload to {repository}")
        if response.status_code == 201 and mount:
            return None
        location = response.headers.get("location")
        if not location:
            raise RegistryError(f"registry {host} opened an upload to {repository} without a Location",
                                status=response.status_code, url=redact(response.request.url))
        return str(response.request.url.join(location))

    def finish_upload(self, host: str, repository: str, location: str, digest: str, data: bytes | Path,
                      scopes: Sequence[str], chunk_size: int) -> None:
        """Send ``data`` (bytes, or a file read ``chunk_size`` at a time) to the session at ``location``:
        one PUT, or PATCH chunks then a PUT when it is larger than ``chunk_size``."""
        what = f"upload the blob {digest} to {repository}"
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        if size <= chunk_size:
            data = data.read_bytes() if isinstance(data, Path) else data
        else:
            for start, chunk in _chunks(data, chunk_size):
                response = self.request("PATCH", host, location, scopes=scopes, ok=(202,), what=what, retry=False,
                                        content=chunk, headers={
                                            "Content-Type": "application/octet-stream",
                                            "Content-Range": f"{start}-{start + len(chunk) - 1}"})
                location = str(response.request.url.join(response.headers.get("location") or location))
            data = b""
        self.request("PUT", host, location, scopes=scopes, ok=(201,), what=what, retry=False, content=data,
                     params={"digest": digest}, headers={"Content-Type": "application/octet-stream"})

    def put_manifest(self, host: str, repository: str, reference: str, body: bytes, media_type: str) -> str:
        response = self.request("PUT", host, f"/v2/{repository}/manifests/{reference}",
                                scopes=[push_scope(repository)], ok=(201,), content=body,
                                headers={"Content-Type": media_type}, what=f"store the manifest {repository}:{reference}")
        return response.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(body).hexdigest()

    def tags(self, host: str, repository: str) -> list[str]:
        """Every tag of ``repository`` (following the registry's pagination)."""
        found: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list"
        while path:
            response = self.request("GET", host, path, scopes=[pull_scope(repository)],
                                    what=f"list the tags of {repository}", ok=(200, 404))
            if response.status_code == 404:
                return found
            found.extend(response.json().get("tags") or [])
            link = re.match(r'\s*<([^>]+)>', response.headers.get("link", ""))
            path = str(response.request.url.join(link.group(1))) if link else None
        return found

    def delete(self, host: str, repository: str, digest: str) -> None:
        """Delete the manifest ``digest`` (and so every tag on it)."""
        self.request("DELETE", host, f"/v2/{repository}/manifests/{digest}", ok=(202, 200),
                     scopes=[f"repository:{repository}:delete"], what=f"delete {repository}@{digest}")


def _chunks(data: bytes | Path, size: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) pieces of ``data``; a file is read one piece at a time."""
    if isinstance(data, bytes):
        yield from ((start, data[start:start + size]) for start in range(0, len(data), size))
        return
    with open(data, "rb") as handle:
        start = 0
        while chunk := handle.read(size):
            yield start, chunk
            start += len(chunk)


def _registry_error(response: httpx.Response) -> tuple[str | None, str]:
    """The first ``{"errors": [{"code", "message"}]}`` entry of an error answer."""
    try:
        errors = response.json().get("errors") or []
        first: dict[str, Any] = errors[0] if errors and isinstance(errors[0], dict) else {}
    except (ValueError, AttributeError):
        return None, ""
    return (str(first["code"]) if first.get("code") else None), str(first.get("message") or "")[:200]


def _netloc(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}" if url.port else host


def _transport_reason(err: httpx.TransportError) -> str:
    if isinstance(err, httpx.ConnectError):
        return "connection refused" if "refused" in str(err).lower() else "cannot connect"
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    return "the connection dropped"

