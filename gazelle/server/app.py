"""``create_app(settings)``: the build server as a Flask app (API, gateway, health), ready to serve.

Creating the app opens the store (migrating its schema), makes the first admin token if there is none
(``{data_dir}/token``), wires builder and target, and starts the job runner thread, which takes the
runner lock (or, with several replicas, claims jobs with leases: see ``jobs``), recovers from an earlier run (failing interrupted jobs, restoring live versions) and then
runs queued jobs. ``settings.run_jobs=False`` makes an app that serves the API and queues jobs but
never runs them (no process is started, no target is touched).

Errors: one handler turns a ``GazelleError`` (its ``code`` and ``to_json()``) and werkzeug's HTTP
errors into ``{"error": {"type", "message"}}``; anything else is a 500 "internal error (id X)" whose
traceback goes to the ``gazelle.server`` log. Flask never configures the root logger here.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from gazelle.errors import GazelleError
from gazelle.server import wiring
from gazelle.server.api import api, health
from gazelle.server.auth import Auth
from gazelle.server.events import EventHub, StreamBudget
from gazelle.server.front import Front, front_blueprint, front_listen
from gazelle.server.gateway import gateway_blueprint
from gazelle.server.jobs import JobRunner
from gazelle.server.metrics import Metrics
from gazelle.server.pipeline import Pipeline
from gazelle.server.routes import RouteTable
from gazelle.server.runtime_access import TokenPublisher, gateway_token
from gazelle.server.settings import Settings
from gazelle.server.state import ServerState, state as _state
from gazelle.server.store import Store
from gazelle.server.urls import ModelUrls

log = logging.getLogger("gazelle.server")

_HTTP_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 411: "length_required", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "unprocessable", 429: "too_many_requests"}


def create_app(settings: Settings | None = None, *, boot_time: float | None = None) -> Flask:
    """The build server app. ``boot_time``: when the server started (jobs queued before it are stale)."""
    settings = settings or Settings.from_env()
    boot_time = time.time() if boot_time is None else boot_time
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    bundles_dir = settings.data_dir / "bundles"
    bundles_dir.mkdir(exist_ok=True)

    store = Store(settings.db_url)
    store.create_schema()
    auth = Auth(store)
    auth.ensure_admin(settings.token_path, settings.admin_token)
    wired = wiring.build(settings)
    hub = EventHub()
    routes = RouteTable(store, ttl=min(1.0, settings.drain_seconds / 2) if settings.drain_seconds else 0.0,
                        addresses=wired.addresses)
    # What the gateway and the sanity check show a private model's runtime: the same in every process
    # of this server, and in every replica that shares GAZELLE_ADMIN_TOKEN. Its hash is in the store, so
    # every replica's runtimes accept every replica's gateway.
    service_token = gateway_token(settings.admin_token or settings.token_path.read_text().strip())
    auth.ensure_gateway_token(service_token)
    front = None
    if settings.front == "nginx":   # `gazelle server` started nginx on the port (front.py)
        front = _front(settings, routes, service_token)
    pipeline = Pipeline(store, hub, wired.builder, wired.target, routes, bundles_dir=bundles_dir,
                        urls=ModelUrls.of(settings), publish=wired.publish,
                        drain_seconds=settings.drain_seconds, stop_grace=settings.stop_grace,
                        sanity_timeout=settings.sanity_timeout, stage_delay=settings.stage_delay,
                        secrets=wiring.secrets_of(settings), bundles=wiring.bundle_store(settings, store),
                        runtime_token=service_token)
    publisher = TokenPublisher(store.token_hashes, wired.target)
    shared = wiring.shared_jobs(settings)

    def acquired() -> None:
        publisher.start()   # before any runtime starts: each one gets its tokens file from its first moment
        pipeline.recover(boot_time, shared=shared)

    runner = JobRunner(store, pipeline.run, lock_path=None if shared else settings.data_dir / "runner.lock",
                       on_acquire=acquired, on_crash=pipeline.fail_job,
                       owner=wiring.replica_id() if shared else None, lease=settings.job_lease_seconds,
                       on_expired=pipeline.replica_stopped)
    pipeline.lease_lost = runner.lost
    metrics = Metrics(store, lambda: runner.is_runner)
    state = ServerState(settings, store, auth, hub, routes, wired, pipeline, runner, metrics, bundles_dir, publisher,
                        StreamBudget(settings.max_event_streams))

    app = Flask("gazelle.server")
    app.extensions["gazelle"] = state
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.register_blueprint(api)
    app.register_blueprint(health)
    app.register_blueprint(gateway_blueprint(routes.resolve, auth.authorize_predict,
                                             upstream_authorization=f"Bearer {service_token}"))
    if front is not None:
        app.register_blueprint(front_blueprint(auth))
        # Behind nginx, every connection is nginx's: the client is the last X-Forwarded-For address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
        front.keep_synced(routes.live)
    app.register_error_handler(Exception, _error_answer)
    app.before_request(_started)
    app.after_request(_observed)
    if settings.run_jobs:
        runner.start()
    log.info("gazelle server ready: %r", settings)
    return app


def _front(settings: Settings, routes: RouteTable, service_token: str) -> Front:
    """The nginx that `gazelle server` started, told about every route change made in this process."""
    front = Front(front_listen(settings), settings.data_dir, gateway_token=service_token)

    def resync() -> None:
        front.sync(routes.live())

    routes.on_change = resync
    return front


def _error_answer(err: Exception) -> Any:
    headers: dict[str, str] = {}
    if isinstance(err, GazelleError):
        code, body, headers = err.code, err.to_json(), err.headers()
        if code >= 500:
            log.error("%s %s failed: %s", request.method, request.path, err.message)
    elif isinstance(err, HTTPException):
        code = err.code or 500
        message = _http_message(code, err)
        body = {"error": {"type": _HTTP_TYPES.get(code, "http_error"), "message": message}}
        headers = {k: v for k, v in err.get_headers() if k.lower() != "content-type"}
    else:
        error_id = uuid.uuid4().hex[:8]
        log.exception("internal error (id %s) answering %s %s", error_id, request.method, request.path)
        code = 500
        body = {"error": {"type": "internal_error", "message": f"internal error (id {error_id})", "id": error_id}}
    answer = jsonify(body)
    answer.status_code = code
    answer.headers.update(headers)
    return answer


def _http_message(code: int, err: HTTPException) -> str:
    if code == 404:
        return f"{request.path} not found"
    if code == 405:
        allowed = ", ".join(m for m in (getattr(err, "valid_methods", None) or []) if m not in ("HEAD", "OPTIONS"))
        return f"{request.method} is not allowed on {request.path}" + (f"; allowed: {allowed}" if allowed else "")
    return err.description or err.name


def _started() -> None:
    g.gazelle_started = time.perf_counter()


def _observed(response: Response) -> Response:
    if response.status_code == 401 and "WWW-Authenticate" not in response.headers:
        # Also for the gateway's own error answers.
        response.headers["WWW-Authenticate"] = 'Bearer realm="gazelle"'
    started = g.get("gazelle_started")
    if started is not None:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        _state().metrics.observe(rule, request.method, response.status_code, time.perf_counter() - started)
    return response

