"""The gateway: ``/m/{name}/...`` forwards to a model's live version, ``/m/{name}/v/{version}/...`` to one.

``gateway_blueprint(resolve, authorize)`` knows nothing of stores or targets:

- ``resolve(name, version)`` -> ``Route`` (``version`` None: the live one), or None when there is no
  such model or version; it may also raise a ``GazelleError`` (``NotFound``) with its own sentence.
- ``authorize(route)`` is called for every request, inside the request context; it raises
  ``Unauthorized`` / ``Forbidden`` (it lets public routes through).

Forwarding: method, path, query string and body (streamed, both ways) go to the runtime; hop-by-hop
headers do not. Runtimes check tokens themselves too (``runtime_access``), so for a private model the
gateway, once it has checked the caller's token, sends ``upstream_authorization`` (the server's
gateway token, ``runtime_access.gateway_token``) or, without one, the credentials it accepted (the
sign-in cookie's token included) as ``Authorization``; for a public one no credentials go on.
``X-Forwarded-For/-Proto/-Host/-Prefix`` are added, ``X-Request-ID`` is passed through (made when absent) and echoed back. One pooled
HTTP client per runtime and process (``upstream``) keeps connections to the runtimes alive. A runtime
on a unix socket is reached only after checking that its path is a socket, not a link.

Browsers: a private model's page opened in a browser (a GET that accepts HTML, with no token) gets a
small sign-in form instead of a JSON 401. The form posts the token to ``/m/{name}/_gazelle/signin``,
which checks it with ``authorize`` first (a refused token gets the form again with a note, and no
cookie), then stores it in an HttpOnly, SameSite=Strict cookie for ``/m/``, so the try-it page and its
``predict`` calls carry it; tokens never travel in URLs. A sign-in posted from another site is refused
(403): ``Sec-Fetch-Site`` must be ``same-origin`` (or ``none``), else ``Origin``, else ``Referer`` must
be this server's own origin, as Django's and Rails' CSRF checks do; a client sending none of them is
not a browser. ``presented_authorization()`` is what the authorizer reads: the Authorization header,
else that cookie. Cookies are never forwarded.

Redirects the server makes itself (the trailing slash, the sign-in's 303, werkzeug's merged slashes)
are relative: a ``Location`` is never built from the ``Host`` header, and the path in it is quoted.

Switch-over: when the connection to a version fails before any answer byte arrives (refused or reset:
a version that has just stopped), the route is resolved again and the request sent once more, to
whatever is live now; when that is the same version at the address that just refused, to another of
its addresses (``Route.alternatives``), if it has some. Predictions are idempotent, so this is safe; a
body larger than ``REPLAY_LIMIT`` already partly sent is not replayed. A version that still does not answer gives
502 ``upstream_unavailable``; one that answers too slowly, 504 ``upstream_timeout``.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit

import httpx
from flask import Blueprint, Response, g, jsonify, redirect, request
from markupsafe import escape
from werkzeug.wrappers import Response as BaseResponse

from gazelle.errors import Forbidden, GazelleError, ModelNotFound, TargetError, Unauthorized, VersionNotFound
from gazelle.server import upstream

REPLAY_LIMIT = 16 * 1024 * 1024
CHUNK = 64 * 1024
READ_TIMEOUT = upstream.READ_TIMEOUT
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# RFC 9110 7.6.1 connection-specific fields, never forwarded either way.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "proxy-connection"})
_DROP_REQUEST = HOP_BY_HOP | {"authorization", "cookie", "host", "content-length", "x-forwarded-for",
                              "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix", "x-request-id"}
# The gateway's own server writes these; two of each would confuse clients.
_DROP_RESPONSE = HOP_BY_HOP | {"date", "server"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
TOKEN_COOKIE = "gazelle_token"
TOKEN_COOKIE_SECONDS = 8 * 3600
# Versions are database integers: a larger number in a URL is a 404 like any missing version.
_VERSION = "int(max=2147483647)"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class Route:
    """Where one version of a model answers."""

    name: str
    version: int
    url: str          # base URL of its runtime
    public: bool
    alternatives: tuple[str, ...] = ()   # other addresses of the same version, to retry on


Resolve = Callable[[str, int | None], Route | None]
Authorize = Callable[[Route], None]


class UpstreamUnavailable(GazelleError):
    code = 502
    type = "upstream_unavailable"

    def __init__(self, route: Route) -> None:
        super().__init__(f"model {route.name} version {route.version} is not answering")


class UpstreamTimeout(GazelleError):
    code = 504
    type = "upstream_timeout"

    def __init__(self, route: Route) -> None:
        super().__init__(f"model {route.name} version {route.version} did not answer within {READ_TIMEOUT:g} s")


def gateway_blueprint(resolve: Resolve, authorize: Authorize, *,
                      upstream_authorization: str | None = None) -> Blueprint:
    """``upstream_authorization``: what a private model's runtime is shown once ``authorize`` passed;
    None: the caller's own credentials."""
    bp = Blueprint("gateway", __name__)

    @bp.errorhandler(GazelleError)
    def _error(err: GazelleError) -> Any:
        return jsonify(err.to_json()), err.code, err.headers()

    @bp.route("/m/<name>/_gazelle/signin", methods=["POST"])
    def signin(name: str) -> BaseResponse:
        if not _same_origin():
            raise Forbidden("a sign-in must be posted from this server's own page, not from another site")
        route = _lookup(resolve, name, None)
        answer = redirect(f"{request.script_root}/m/{quote(name)}/", code=303)
        token = (request.form.get("token") or "").strip()
        if route.public or not token:
            return answer
        g.gazelle_presented = f"Bearer {token}"
        try:
            authorize(route)
        except (Unauthorized, Forbidden) as err:
            return _signin_page(name, err, rejected=True)
        answer.set_cookie(TOKEN_COOKIE, token, max_age=TOKEN_COOKIE_SECONDS, path=f"{request.script_root}/m/",
                          httponly=True, samesite="Strict", secure=request.is_secure)
        return answer

    @bp.after_app_request
    def _relative_location(response: BaseResponse) -> BaseResponse:
        location = response.headers.get("Location")
        if location and response.status_code in (301, 302, 303, 307, 308):
            parts = urlsplit(location)
            # werkzeug's own redirects (merged slashes) are absolute, built from the Host header.
            if parts.scheme and parts.netloc == request.host:
                response.headers["Location"] = parts.path + (f"?{parts.query}" if parts.query else "")
        return response

    @bp.route("/m/<name>", methods=METHODS, provide_automatic_options=False)
    def to_slash(name: str) -> Any:
        return _slash_redirect()

    @bp.route(f"/m/<name>/v/<{_VERSION}:version>", methods=METHODS, provide_automatic_options=False)
    def version_to_slash(name: str, version: int) -> Any:
        return _slash_redirect()

    @bp.route("/m/<name>/", methods=METHODS, defaults={"rest": ""}, provide_automatic_options=False)
    @bp.route("/m/<name>/<path:rest>", methods=METHODS, provide_automatic_options=False)
    def live(name: str, rest: str) -> Response:
        return _forward(resolve, authorize, name, None, rest, upstream_authorization)

    @bp.route(f"/m/<name>/v/<{_VERSION}:version>/", methods=METHODS, defaults={"rest": ""},
              provide_automatic_options=False)
    @bp.route(f"/m/<name>/v/<{_VERSION}:version>/<path:rest>", methods=METHODS, provide_automatic_options=False)
    def pinned(name: str, version: int, rest: str) -> Response:
        return _forward(resolve, authorize, name, version, rest, upstream_authorization)

    return bp


def _slash_redirect() -> BaseResponse:
    query = request.query_string.decode("latin-1")
    path = quote(request.script_root + request.path, safe=_PATH_SAFE)
    return redirect(path + "/" + (f"?{query}" if query else ""), code=308)


def _same_origin() -> bool:
    """False for a request a browser sent on behalf of another site."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    # Hosts, not schemes, are compared: behind a proxy that ends TLS the server sees http while the
    # browser says https. Another site cannot make its Origin name this host.
    for header in ("Origin", "Referer"):
        value = request.headers.get(header)
        if value is not None:
            return urlsplit(value).netloc == request.host
    return True


def _lookup(resolve: Resolve, name: str, version: int | None) -> Route:
    route = resolve(name, version)
    if route is None:
        if version is None:
            raise ModelNotFound(name)
        raise VersionNotFound(name, version)
    return route


def _forward(resolve: Resolve, authorize: Authorize, name: str, version: int | None, rest: str,
             upstream_authorization: str | None) -> Response:
    route = _lookup(resolve, name, version)
    try:
        authorize(route)
    except Unauthorized as err:
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            return _signin_page(name, err)
        raise
    request_id = request.headers.get("X-Request-ID", "")
    if not _REQUEST_ID.match(request_id):
        request_id = uuid.uuid4().hex
    prefix = f"/m/{name}" if version is None else f"/m/{name}/v/{version}"
    headers = _request_headers(request_id, request.script_root + prefix)
    if not route.public:
        credentials = upstream_authorization or presented_authorization()
        if credentials:
            headers.append((b"Authorization", credentials.encode("latin-1", errors="replace")))
    body = _Body(request.stream) if _has_body() else None
    target = quote(rest, safe="/:@!$&'()*+,;=-._~")
    query = request.query_string
    path = f"/{target}" + (f"?{query.decode('latin-1')}" if query else "")
    for attempt in (1, 2):
        try:
            answer = _send(request.method, route.url, path, headers, body)
            break
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, TargetError):
            if attempt == 2 or (body is not None and not body.rewind()):
                raise UpstreamUnavailable(route) from None
            refused = route.url
            route = _lookup(resolve, name, version)   # the live version may have just changed
            if route.url == refused and route.alternatives:
                route = replace(route, url=route.alternatives[0], alternatives=route.alternatives[1:])
        except httpx.TimeoutException:
            raise UpstreamTimeout(route) from None
    return _response(answer, request_id, request.script_root + prefix)


def presented_authorization() -> str | None:
    """The caller's credentials as an Authorization header value: the header, else the sign-in cookie
    (during a sign-in: the token posted in the form)."""
    presented = g.get("gazelle_presented")
    if presented:
        return str(presented)
    header = request.headers.get("Authorization")
    if header:
        return header
    cookie = request.cookies.get(TOKEN_COOKIE)
    return f"Bearer {cookie}" if cookie else None


def _signin_page(name: str, err: GazelleError, *, rejected: bool = False) -> Response:
    tried = rejected or TOKEN_COOKIE in request.cookies
    note = f"That token was not accepted: {err.message}. " if tried else ""
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(name)}: sign in</title>
<style>body{{font:16px system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}
input{{width:100%;padding:.5rem;font:inherit;box-sizing:border-box}}button{{margin-top:.75rem;padding:.5rem 1rem;font:inherit}}
.note{{color:#a33}}</style></head><body>
<h1>Model {escape(name)}</h1>
<p><span class="note">{escape(note)}</span>This model is private: paste a token with the <code>predict</code> scope
(<code>gazelle token create --scope predict</code>).</p>
<form method="post" action="{escape(request.script_root)}/m/{escape(quote(name))}/_gazelle/signin"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<button type="submit">Open the model</button></form></body></html>"""
    answer = Response(html, status=err.code, mimetype="text/html")
    answer.headers["WWW-Authenticate"] = "Bearer"
    answer.headers["Cache-Control"] = "no-store"
    return answer


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _request_headers(request_id: str, prefix: str) -> list[tuple[bytes, bytes]]:
    connection = {v.strip().lower() for v in request.headers.get("Connection", "").split(",")}
    headers = {k: v for k, v in request.headers.items()
               if k.lower() not in _DROP_REQUEST and k.lower() not in connection}
    forwarded = request.headers.get("X-Forwarded-For")
    client = request.remote_addr or ""
    headers["X-Forwarded-For"] = f"{forwarded}, {client}" if forwarded else client
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Prefix"] = prefix
    headers["X-Request-ID"] = request_id
    if request.content_length:
        headers["Content-Length"] = str(request.content_length)
    # WSGI hands headers over as latin-1 strings; send back the very bytes the client sent.
    return [(k.encode("latin-1"), v.encode("latin-1", errors="replace")) for k, v in headers.items()]


def _response(upstream: httpx.Response, request_id: str, prefix: str) -> Response:
    connection = {v.strip().lower() for v in upstream.headers.get("connection", "").split(",")}
    out = Response(_stream(upstream), status=upstream.status_code, direct_passthrough=True)
    out.headers.clear()   # only what the runtime said, not Flask's defaults
    for key, value in upstream.headers.multi_items():
        lower = key.lower()
        if lower in _DROP_RESPONSE or lower in connection:
            continue
        if lower == "location" and value.startswith("/") and not value.startswith("//") \
                and not value.startswith(prefix + "/"):
            value = prefix + value   # the runtime thinks it is at "/"; it is at the prefix
        out.headers.add(key, value)
    if "x-request-id" not in upstream.headers:
        out.headers["X-Request-ID"] = request_id
    out.call_on_close(upstream.close)
    return out


def _stream(upstream: httpx.Response) -> Iterator[bytes]:
    try:
        yield from upstream.iter_raw(CHUNK)
    except httpx.HTTPError:
        pass   # the runtime died mid-answer: the client sees a short body, as from any proxy
    finally:
        upstream.close()


class _Body:
    """The request body as an iterator for httpx, remembered up to REPLAY_LIMIT so it can be re-sent."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._seen: list[bytes] = []
        self._seen_bytes = 0
        self._overflow = False
        self._replay: list[bytes] = []

    def __iter__(self) -> Iterator[bytes]:
        while self._replay:
            yield self._replay.pop(0)
        while True:
            chunk = self._stream.read(CHUNK)
            if not chunk:
                return
            if not self._overflow:
                self._seen_bytes += len(chunk)
                if self._seen_bytes > REPLAY_LIMIT:
                    self._overflow = True
                    self._seen.clear()
                else:
                    self._seen.append(chunk)
            yield chunk

    def rewind(self) -> bool:
        """Make the next iteration start again from the first byte; False if that is impossible."""
        if self._overflow:
            return False
        self._replay = list(self._seen)
        return True


def _send(method: str, url: str, path: str, headers: list[tuple[bytes, bytes]],
          body: _Body | None) -> httpx.Response:
    socket = upstream.socket_path(url)
    if socket is not None:
        # Only a socket, never a link a runtime could have put there to point us somewhere else.
        upstream.verified_socket(socket)
    client = upstream.client(url)
    upstream_request = client.build_request(method, upstream.http_url(url, path), headers=headers,
                                            content=iter(body) if body is not None else None)
    return client.send(upstream_request, stream=True)
