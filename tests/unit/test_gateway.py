"""The gateway in-process: a Flask app holding only the gateway blueprint, forwarding over real HTTP on
127.0.0.1 to small upstream servers run in threads (no processes)."""
from __future__ import annotations

import json
import socket
import threading
from typing import Any, Iterator

import pytest
from flask import Flask, Response, jsonify, redirect, request
from werkzeug.serving import make_server

from gazelle.errors import Unauthorized
from gazelle.server.gateway import REPLAY_LIMIT, TOKEN_COOKIE, Route, gateway_blueprint, presented_authorization
from tests.helpers import free_port


def _echo_app(label: str) -> Flask:
    app = Flask(f"upstream-{label}")
    app.config["hits"] = 0

    @app.route("/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    @app.route("/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def echo(rest: str) -> Any:
        app.config["hits"] += 1
        return jsonify(upstream=label, method=request.method, path=request.path,
                       query=request.query_string.decode(), body=request.get_data(as_text=True),
                       headers={k.lower(): v for k, v in request.headers.items()})

    @app.route("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            for i in range(256):
                yield bytes([i % 251]) * 4096
        return Response(chunks(), mimetype="application/octet-stream")

    @app.route("/moved")
    def moved() -> Any:
        return redirect("/elsewhere", code=302)

    return app


class _Server:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _HangUp:
    """Accepts a connection, reads part of the request, and closes without answering."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.received += len(conn.recv(200_000))

    def close(self) -> None:
        self.sock.close()


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[int, _Server]]:
    servers = {1: _Server(_echo_app("v1")), 2: _Server(_echo_app("v2"))}
    yield servers
    for server in servers.values():
        server.close()


class Gateway:
    """A Flask app with the gateway blueprint; ``routes`` and ``live`` say where models are."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, int], Route] = {}
        self.live: dict[str, list[int]] = {}   # each resolve of the live version pops the next one
        self.resolved = 0
        self.authorized: list[Route] = []
        self.app = Flask("gateway-test")
        self.app.register_blueprint(gateway_blueprint(self.resolve, self.authorize))
        self.client = self.app.test_client()

    def add(self, name: str, version: int, url: str, public: bool = True) -> None:
        self.routes[(name, version)] = Route(name, version, url, public)

    def resolve(self, name: str, version: int | None) -> Route | None:
        self.resolved += 1
        if version is None:
            versions = self.live.get(name)
            if not versions:
                return None
            version = versions.pop(0) if len(versions) > 1 else versions[0]
        return self.routes.get((name, version))

    def authorize(self, route: Route) -> None:
        self.authorized.append(route)
        if not route.public and presented_authorization() != "Bearer good":
            raise Unauthorized("this call needs a token")


@pytest.fixture
def gw(upstreams: dict[int, _Server]) -> Gateway:
    for server in upstreams.values():
        server.app.config["hits"] = 0
    gateway = Gateway()
    gateway.add("accounts", 1, upstreams[1].url)
    gateway.add("accounts", 2, upstreams[2].url)
    gateway.live["accounts"] = [2]
    return gateway


def test_live_path_forwards_method_path_query_and_body_to_the_live_version(gw: Gateway) -> None:
    got = gw.client.post("/m/accounts/predict?proba=true&x=1", data=b'{"instances": [1]}',
                         content_type="application/json")
    assert got.status_code == 200
    echo = got.get_json()
    assert echo["upstream"] == "v2"
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/predict", "proba=true&x=1")
    assert echo["body"] == '{"instances": [1]}'
    assert echo["headers"]["content-type"] == "application/json"


def test_pinned_version_path_goes_to_that_version(gw: Gateway) -> None:
    echo = gw.client.get("/m/accounts/v/1/v2/health/ready").get_json()
    assert (echo["upstream"], echo["path"]) == ("v1", "/v2/health/ready")


def test_model_root_forwards_to_runtime_root(gw: Gateway) -> None:
    echo = gw.client.get("/m/accounts/").get_json()
    assert (echo["upstream"], echo["path"]) == ("v2", "/")
    echo = gw.client.get("/m/accounts/v/1/").get_json()
    assert (echo["upstream"], echo["path"]) == ("v1", "/")


def test_authorization_and_hop_by_hop_headers_are_not_forwarded(gw: Gateway) -> None:
    echo = gw.client.get("/m/accounts/x", headers={
        "Authorization": "Bearer secret-token", "Connection": "keep-alive, X-Private",
        "X-Private": "1", "Keep-Alive": "timeout=5", "TE": "trailers", "X-Custom": "kept"}).get_json()
    headers = echo["headers"]
    assert "authorization" not in headers
    assert "x-private" not in headers and "keep-alive" not in headers and "te" not in headers
    assert headers["x-custom"] == "kept"
    assert "secret-token" not in json.dumps(echo)


def test_forwarded_headers_name_the_client_and_the_prefix(gw: Gateway) -> None:
    headers = gw.client.get("/m/accounts/x", headers={"X-Forwarded-For": "10.1.2.3"},
                            environ_base={"REMOTE_ADDR": "127.0.0.9"}).get_json()["headers"]
    assert headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.9"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-prefix"] == "/m/accounts"
    pinned = gw.client.get("/m/accounts/v/1/x").get_json()["headers"]
    assert pinned["x-forwarded-prefix"] == "/m/accounts/v/1"


def test_request_id_is_passed_through_or_made(gw: Gateway) -> None:
    given = gw.client.get("/m/accounts/x", headers={"X-Request-ID": "abc-123"})
    assert given.get_json()["headers"]["x-request-id"] == "abc-123"
    assert given.headers["X-Request-ID"] == "abc-123"
    made = gw.client.get("/m/accounts/x")
    made_id = made.get_json()["headers"]["x-request-id"]
    assert len(made_id) >= 16 and made.headers["X-Request-ID"] == made_id
    hostile = gw.client.get("/m/accounts/x", headers={"X-Request-ID": "a b\tc" * 50})
    assert hostile.get_json()["headers"]["x-request-id"] != "a b\tc" * 50


def test_model_without_slash_redirects_permanently_keeping_the_query(gw: Gateway) -> None:
    got = gw.client.post("/m/accounts?a=1")
    assert got.status_code == 308
    assert got.headers["Location"].endswith("/m/accounts/?a=1")
    pinned = gw.client.get("/m/accounts/v/1")
    assert pinned.status_code == 308 and pinned.headers["Location"].endswith("/m/accounts/v/1/")


def test_unknown_model_is_404_naming_it(gw: Gateway) -> None:
    got = gw.client.post("/m/nosuch/predict", json={"instances": []})
    assert got.status_code == 404
    assert got.get_json()["error"]["type"] == "not_found"
    assert "nosuch" in got.get_json()["error"]["message"]
    version = gw.client.get("/m/accounts/v/9/predict")
    assert version.status_code == 404 and "version 9" in version.get_json()["error"]["message"]


def test_upstream_down_is_502_naming_model_and_version(gw: Gateway) -> None:
    gw.add("accounts", 3, _closed_url())
    got = gw.client.post("/m/accounts/v/3/predict", json={"instances": [1]})
    assert got.status_code == 502
    assert got.get_json() == {"error": {"type": "upstream_unavailable",
                                        "message": "model accounts version 3 is not answering"}}


def test_refused_connection_is_retried_once_on_the_new_live_version(gw: Gateway) -> None:
    gw.add("accounts", 3, _closed_url())      # v3 was live when resolved, then stopped
    gw.live["accounts"] = [3, 2]
    got = gw.client.post("/m/accounts/predict", data=b"payload", content_type="text/plain")
    assert got.status_code == 200
    assert got.get_json()["upstream"] == "v2" and got.get_json()["body"] == "payload"
    assert gw.resolved == 2


def test_a_refused_replica_is_retried_on_another_ready_address_of_the_same_version(
        gw: Gateway, upstreams: dict[int, _Server]) -> None:
    # the route table hands out the dead replica first each time (its round robin just came round)
    gw.routes[("accounts", 5)] = Route("accounts", 5, _closed_url(), True, alternatives=(upstreams[1].url,))
    got = gw.client.post("/m/accounts/v/5/predict", data=b"payload", content_type="text/plain")
    assert got.status_code == 200
    assert got.get_json()["upstream"] == "v1" and got.get_json()["body"] == "payload"
    assert gw.resolved == 2


def test_retry_resends_a_body_the_dead_upstream_had_partly_read(gw: Gateway) -> None:
    hangup = _HangUp()
    try:
        gw.add("accounts", 3, hangup.url)
        gw.live["accounts"] = [3, 2]
        body = b"0123456789" * 30_000
        got = gw.client.post("/m/accounts/predict", data=body, content_type="text/plain")
    finally:
        hangup.close()
    assert hangup.received > 0
    assert got.status_code == 200
    assert got.get_json()["upstream"] == "v2" and len(got.get_json()["body"]) == len(body)


def test_retry_happens_only_once(gw: Gateway) -> None:
    gw.add("accounts", 3, _closed_url())
    gw.add("accounts", 4, _closed_url())
    gw.live["accounts"] = [3, 4, 2]
    got = gw.client.get("/m/accounts/x")
    assert got.status_code == 502
    assert "version 4" in got.get_json()["error"]["message"]
    assert gw.resolved == 2


def test_long_response_streams_back_whole(gw: Gateway) -> None:
    got = gw.client.get("/m/accounts/stream")
    assert got.status_code == 200
    assert got.data == b"".join(bytes([i % 251]) * 4096 for i in range(256))
    assert got.headers["Content-Type"] == "application/octet-stream"


def test_root_relative_redirect_from_runtime_stays_under_the_prefix(gw: Gateway) -> None:
    got = gw.client.get("/m/accounts/moved")
    assert got.status_code == 302
    assert got.headers["Location"] == "/m/accounts/elsewhere"


def test_private_model_needs_authorization_and_is_not_reached_without(
        gw: Gateway, upstreams: dict[int, _Server]) -> None:
    gw.add("secret", 1, upstreams[1].url, public=False)
    gw.live["secret"] = [1]
    refused = gw.client.get("/m/secret/x")
    assert refused.status_code == 401
    assert refused.get_json()["error"]["type"] == "unauthorized"
    assert upstreams[1].app.config["hits"] == 0
    allowed = gw.client.get("/m/secret/x", headers={"Authorization": "Bearer good"})
    # The runtime checks the token too: the one the gateway accepted goes on.
    assert allowed.status_code == 200 and allowed.get_json()["headers"]["authorization"] == "Bearer good"
    assert [r.name for r in gw.authorized] == ["secret", "secret"]


def test_public_model_gets_no_forwarded_credentials(gw: Gateway) -> None:
    got = gw.client.get("/m/accounts/x", headers={"Authorization": "Bearer whatever"})
    assert got.status_code == 200 and "authorization" not in got.get_json()["headers"]


def test_replay_limit_is_large_enough_for_a_runtime_request() -> None:
    assert REPLAY_LIMIT >= 10 * 1024 * 1024   # the runtime's default GAZELLE_MAX_BODY_BYTES


def test_non_ascii_header_values_pass_through_as_sent(gw: Gateway) -> None:
    got = gw.client.get("/m/accounts/x", headers={"X-City": "Zürich"})
    assert got.status_code == 200
    assert got.get_json()["headers"]["x-city"] == "Zürich"   # the same latin-1 bytes on both hops


def test_chunked_request_body_is_streamed_to_the_runtime(gw: Gateway) -> None:
    import io

    body = b"x" * 200_000
    got = gw.client.post("/m/accounts/predict", input_stream=io.BytesIO(body),
                         headers={"Transfer-Encoding": "chunked", "Content-Type": "text/plain"},
                         environ_overrides={"wsgi.input_terminated": True})
    assert got.status_code == 200
    assert len(got.get_json()["body"]) == len(body)


# -- browsers and private models ---------------------------------------------------------------------

@pytest.fixture
def private(gw: Gateway, upstreams: dict[int, _Server]) -> Gateway:
    gw.add("secret", 1, upstreams[1].url, public=False)
    gw.live["secret"] = [1]
    return gw


def test_a_browser_without_a_token_gets_a_signin_form_not_json(private: Gateway) -> None:
    got = private.client.get("/m/secret/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert got.status_code == 401
    assert got.mimetype == "text/html" and got.headers["WWW-Authenticate"] == "Bearer"
    page = got.get_data(as_text=True)
    assert 'action="/m/secret/_gazelle/signin"' in page and 'name="token"' in page


def test_an_api_client_without_a_token_still_gets_a_json_401(private: Gateway) -> None:
    got = private.client.get("/m/secret/metadata", headers={"Accept": "*/*"})
    assert got.status_code == 401
    assert got.get_json()["error"]["type"] == "unauthorized"


def test_signin_sets_a_strict_httponly_cookie_and_the_page_then_opens(private: Gateway) -> None:
    got = private.client.post("/m/secret/_gazelle/signin", data={"token": "good"})
    assert got.status_code == 303 and got.headers["Location"].endswith("/m/secret/")
    cookie = got.headers["Set-Cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}=good") and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Path=/m/" in cookie
    page = private.client.get("/m/secret/predict", headers={"Accept": "text/html"})
    assert page.status_code == 200
    seen = page.get_json()["headers"]
    assert "cookie" not in seen, "cookies must not reach the runtime"
    assert seen["authorization"] == "Bearer good"   # the cookie's token, for the runtime's own check


def test_a_wrong_token_in_the_cookie_shows_the_form_again_with_a_note(private: Gateway) -> None:
    private.client.set_cookie(TOKEN_COOKIE, "stale", path="/m/")
    got = private.client.get("/m/secret/", headers={"Accept": "text/html"})
    assert got.status_code == 401 and "not accepted" in got.get_data(as_text=True)


def test_signin_with_a_wrong_token_shows_the_form_again_and_sets_no_cookie(private: Gateway) -> None:
    got = private.client.post("/m/secret/_gazelle/signin", data={"token": "bad"})
    assert got.status_code == 401 and "Set-Cookie" not in got.headers
    page = got.get_data(as_text=True)
    assert "not accepted" in page and 'name="token"' in page
    assert private.client.get_cookie(TOKEN_COOKIE, path="/m/") is None


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"},
    {"Sec-Fetch-Site": "same-site"},
    {"Referer": "http://evil.example/page"},
    {"Origin": "null"},
])
def test_a_signin_posted_from_another_site_is_refused_without_a_cookie(private: Gateway,
                                                                       headers: dict[str, str]) -> None:
    got = private.client.post("/m/secret/_gazelle/signin", data={"token": "good"}, headers=headers)
    assert got.status_code == 403 and got.get_json()["error"]["type"] == "forbidden"
    assert "Set-Cookie" not in got.headers


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "same-origin"},
    {"Origin": "http://localhost"},
    {"Referer": "http://localhost/m/secret/"},
])
def test_a_signin_from_the_servers_own_page_is_accepted(private: Gateway, headers: dict[str, str]) -> None:
    got = private.client.post("/m/secret/_gazelle/signin", data={"token": "good"}, headers=headers)
    assert got.status_code == 303 and got.headers["Set-Cookie"].startswith(f"{TOKEN_COOKIE}=good")


@pytest.mark.parametrize("path, location", [
    ("/m/accounts//metadata", "/m/accounts/metadata"),
    ("/m/accounts", "/m/accounts/"),
    ("/m/accounts/v/2", "/m/accounts/v/2/"),
])
def test_redirects_are_relative_whatever_the_host_header(gw: Gateway, path: str, location: str) -> None:
    got = gw.client.get(path, headers={"Host": "evil.example"})
    assert got.status_code in (301, 308) and got.headers["Location"] == location


def test_signin_redirect_is_relative_whatever_the_host_header(private: Gateway) -> None:
    got = private.client.post("/m/secret/_gazelle/signin", data={"token": "good"},
                              headers={"Host": "evil.example"})
    assert got.status_code == 303 and got.headers["Location"] == "/m/secret/"


def test_a_newline_in_a_model_name_is_quoted_in_the_slash_redirect(gw: Gateway) -> None:
    got = gw.client.get("/m/x%0A")
    assert got.status_code == 308 and got.headers["Location"] == "/m/x%0A/"


def test_a_version_too_large_for_the_database_is_404(gw: Gateway) -> None:
    got = gw.client.get("/m/accounts/v/99999999999999999999999/")
    assert got.status_code == 404
    assert gw.resolved == 0
