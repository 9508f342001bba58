"""The model endpoint as a Flask app: routes that only delegate, one error handler, instrumentation.

    app = create_app("accounts.tar")      # reads, checks the environment, unpickles, builds the app

Routes: ``POST /predict``; the Open Inference Protocol v2 (``/v2/health/live|ready``,
``/v2/models/{name}[/versions/{v}][/ready|/infer]``); ``GET /metadata``, ``/openapi.json``,
``/metrics``; ``GET /`` the try-it page. The work sits in :mod:`gazelle.runtime.dataplane`; reading and
parsing bodies in :mod:`gazelle.runtime.wire` (v2's JSON-or-binary framing and its error shape in
:mod:`gazelle.runtime.v2wire`); the mapping of errors to answers in
:mod:`gazelle.runtime.errors`. Everything that does not depend on the request (metadata, OpenAPI,
the try-it page) is rendered once here, before gunicorn forks.

Speed: this sits on every request, so JSON is orjson both ways, answers are built as bytes (no
``jsonify``), a plain ``POST /predict`` skips Flask's dispatch (see ``fast_predict``), and the
per-request instrumentation is one WSGI wrapper: a few metric increments and one log write.
"""
from __future__ import annotations

import json
import os
from time import perf_counter
from typing import Any, Callable, Iterable

import orjson
from flask import Flask, Request, Response, render_template, request
from werkzeug.routing import Rule

import gazelle
from gazelle import bundle as bundles
from gazelle.errors import Unauthorized
from gazelle.runtime import access, errors, loader, logs, openapi, v2wire, wire
from gazelle.runtime.dataplane import DataPlane
from gazelle.runtime.errors import ModelFailure
from gazelle.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gazelle.runtime.metrics import Metrics
from gazelle.runtime.settings import RuntimeSettings

UNMATCHED = "(unmatched)"
ROUTE = "gazelle.route"
_JSON = "application/json"
_METHODS = {m: m for m in ("GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE")}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def create_app(bundle: bundles.Bundle | bytes | str | os.PathLike[str], *,
               settings: RuntimeSettings | None = None) -> Flask:
    """The endpoint for one bundle. Raises EnvironmentMismatch (strict check) or ModelLoadFailed."""
    settings = settings or RuntimeSettings.from_env()
    logs.configure()
    loaded = loader.load(loader.read(bundle), settings.env_check)
    return build_app(loaded, settings)


class RuntimeRequest(Request):
    """Notes the matched URL rule in the WSGI environ, where the metrics wrapper reads it after Flask
    has dropped the request; this costs nothing per request, unlike an ``after_request`` hook."""

    _rule: Rule | None = None

    @property
    def url_rule(self) -> Rule | None:
        return self._rule

    @url_rule.setter
    def url_rule(self, rule: Rule | None) -> None:
        self._rule = rule
        if rule is not None:
            self.environ[ROUTE] = rule.rule


class RuntimeFlask(Flask):
    request_class = RuntimeRequest

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # Every view here is synchronous; skip Flask's per-call coroutine check on the hot path.
        return func


def _dumps(body: Any) -> bytes:
    try:
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        # orjson refuses lone surrogates, which the stdlib parser lets through into error messages.
        return json.dumps(body, default=str).encode()


def _json(body: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(_dumps(body), status=status, headers=headers, content_type=_JSON)


def build_app(loaded: loader.Loaded, settings: RuntimeSettings) -> Flask:
    bundle = loaded.bundle
    metrics = Metrics()
    plane = DataPlane(bundle.manifest, loaded.model, version=settings.model_version, digest=bundle.digest,
                      max_batch_rows=settings.max_batch, timeout=settings.timeout,
                      observe=metrics.observe_batch)
    metrics.model_load_seconds.set(loaded.seconds)
    metrics.model_info.labels(plane.name, plane.version_text, plane.digest).set(1)

    app = RuntimeFlask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["gazelle.runtime"] = plane
    limit = settings.max_body_bytes

    metadata = orjson.dumps(plane.metadata())
    v2_metadata = orjson.dumps(plane.v2_metadata())
    spec = orjson.dumps(openapi.build(plane))
    server = orjson.dumps({"name": "gazelle", "version": gazelle.__version__,
                           "extensions": [v2wire.EXTENSION]})
    with app.app_context():
        page = render_template("tryit.html", **_page_context(plane)).encode()

    def read_json() -> Any:
        environ = request.environ
        wire.check_content_type(environ)
        return wire.parse_json(wire.read_body(environ, limit))

    def cached(data: bytes, content_type: str = _JSON) -> Response:
        return Response(data, content_type=content_type)

    @app.get("/")
    def tryit() -> Response:
        return cached(page, "text/html; charset=utf-8")

    @app.post("/predict")
    def predict() -> Response:
        body = read_json()
        proba = wire.flag(request.args, "proba") if request.environ.get("QUERY_STRING") else False
        answer, rows = plane.predict(body, proba=proba)
        metrics.rows.inc(rows)
        return _json(answer)

    @app.get("/metadata")
    def metadata_view() -> Response:
        return cached(metadata)

    @app.get("/openapi.json")
    def openapi_view() -> Response:
        return cached(spec)

    @app.get("/metrics")
    def metrics_view() -> Response:
        return cached(metrics.render(), METRICS_CONTENT_TYPE)

    @app.get("/v2")
    def v2_server() -> Response:
        return cached(server)

    @app.get("/v2/health/live")
    def v2_live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    def v2_ready() -> Response:
        return _json({"ready": True})

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<version>")
    def v2_model(name: str, version: str | None = None) -> Response:
        plane.check_model(name, version)
        return cached(v2_metadata)

    @app.get("/v2/models/<name>/ready")
    @app.get("/v2/models/<name>/versions/<version>/ready")
    def v2_model_ready(name: str, version: str | None = None) -> Response:
        plane.check_model(name, version)
        return _json({"name": plane.name, "ready": True})

    @app.post("/v2/models/<name>/infer")
    @app.post("/v2/models/<name>/versions/<version>/infer")
    def v2_infer(name: str, version: str | None = None) -> Response:
        plane.check_model(name, version)
        environ = request.environ
        length = v2wire.header_length(environ)
        head, binary = v2wire.split(wire.read_body(environ, limit), length)
        body = wire.parse_json(head)
        v2wire.attach_binary_inputs(body, binary)
        wanted_binary = v2wire.binary_outputs(body) if isinstance(body, dict) else {}
        answer, rows = plane.infer(body)
        metrics.rows.inc(rows)
        data, headers = v2wire.encode(answer, wanted_binary)
        return Response(data, headers=headers)

    def error_response(err: Exception, environ: dict[str, Any], method: str, path: str) -> Response:
        if isinstance(err, ModelFailure):
            metrics.model_errors.inc()
        status, body, headers = errors.error_answer(
            err, request_id=environ.get("gazelle.request_id", "-"), method=method, path=path)
        if path == "/v2" or path.startswith("/v2/"):
            body = v2wire.error_body(body)
        return _json(body, status, headers)

    @app.errorhandler(Exception)
    def handle_error(err: Exception) -> Response:
        return error_response(err, request.environ, request.method, request.path)

    flask_app = app.wsgi_app

    def fast_predict(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Nearly all traffic is a plain POST /predict. Flask's routing and request objects cost about
        # 150-200 µs of it, more than all of Gazelle's own work, so that one request shape is answered
        # here with the same wire checks, data plane and error mapping as the Flask view above; every
        # other request (``?proba=true`` included) goes through Flask.
        if (environ.get("PATH_INFO") != "/predict" or environ.get("REQUEST_METHOD") != "POST"
                or environ.get("QUERY_STRING")):
            return flask_app(environ, start_response)
        environ[ROUTE] = "/predict"
        try:
            wire.check_content_type(environ)
            answer, rows = plane.predict(wire.parse_json(wire.read_body(environ, limit)), proba=False)
            metrics.rows.inc(rows)
            data = _dumps(answer)
        except Exception as err:
            return error_response(err, environ, "POST", "/predict")(environ, start_response)
        start_response("200 OK", [("Content-Type", _JSON), ("Content-Length", str(len(data)))])
        return [data]

    served: WSGIApp = fast_predict
    if settings.tokens_file is not None:
        tokens = access.TokenFile(settings.tokens_file)
        open_paths = access.OPEN_PATHS

        def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in open_paths or tokens.allows(environ.get("HTTP_AUTHORIZATION")):
                return fast_predict(environ, start_response)
            environ[ROUTE] = UNMATCHED
            refused = Unauthorized(f"model {plane.name} is private: send the header "
                                   "'Authorization: Bearer <token>' with a valid token")
            answer = error_response(refused, environ, environ.get("REQUEST_METHOD", ""), path)
            answer.headers["WWW-Authenticate"] = 'Bearer realm="gazelle"'
            return answer(environ, start_response)

        served = guarded
    access_log = logs.AccessLog() if settings.access_log else None
    app.wsgi_app = Instrumented(served, metrics, access_log)  # type: ignore[method-assign]
    return app


def _page_context(plane: DataPlane) -> dict[str, Any]:
    sample = plane.manifest.get("sample") or []
    noun = plane.name.replace("-", " ")
    classes = plane.classes or []
    return {
        "name": plane.name, "version": plane.version, "gazelle_version": gazelle.__version__,
        "input_schema": plane.input_schema, "first_row": sample[0] if sample else None,
        "has_proba": plane.has_proba, "class_count": len(classes),
        # "On which of the 20 accounts should ... go?" reads well for plural names; else say classes.
        "noun": noun if noun.endswith("s") and " " not in noun else "classes",
    }


class Instrumented:
    """WSGI wrapper: request id in and out, in-flight gauge, latency and status metrics, access log."""

    def __init__(self, wsgi_app: WSGIApp, metrics: Metrics, access_log: logs.AccessLog | None) -> None:
        self.wsgi_app = wsgi_app
        self.metrics = metrics
        self.access_log = access_log

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = perf_counter()
        request_id = wire.request_id(environ.get("HTTP_X_REQUEST_ID"))
        environ["gazelle.request_id"] = request_id
        status = [500]

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = int(status_line[:3])
            headers.append(("X-Request-ID", request_id))
            return start_response(status_line, headers, exc_info)

        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            return self.wsgi_app(environ, start)
        finally:
            in_flight.dec()
            seconds = perf_counter() - started
            method = environ.get("REQUEST_METHOD", "")
            self.metrics.observe(environ.get(ROUTE, UNMATCHED), _METHODS.get(method, "other"),
                                 status[0], seconds)
            if self.access_log is not None:
                self.access_log(method[:16], environ.get("PATH_INFO", ""), status[0], seconds * 1000.0,
                                request_id, environ.get("REMOTE_ADDR", ""))
