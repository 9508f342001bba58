"""The build server's HTTP API under ``/api/v1``, and ``/healthz``, ``/readyz``, ``/metrics``.

Views only check input and delegate: ``deployments`` decides what a deploy, rollback or delete
becomes (a job, answered 202 with its id; 200 with a job born succeeded when the bundle is already
the live version), and the job runner does the work. Every call needs a bearer token: reading needs
``predict``, deploying and reading runtime logs (``/logs``, a job's ``error.logs`` and its ``log``
events) ``deploy``, managing tokens ``admin``.
Bad input is a ``GazelleError`` whose sentence names the field; ``app.py`` turns it into JSON. Every
JSON field is type-checked before use, so a client's mistake is a 4xx, never a 500.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from flask import Blueprint, Response, g, jsonify, request, stream_with_context

from gazelle.booleans import query_flag
from gazelle.errors import BadRequest, NotFound, Unavailable, UnsupportedMediaType
from gazelle.names import validate_name
from gazelle.redaction import redact
from gazelle.server import deployments, events, uploads
from gazelle.server.auth import Auth, allows, check_name, check_scope, require
from gazelle.server.jobs import iso, job_json
from gazelle.server.targets.resources import Resources
from gazelle.server.state import state
from gazelle.server.store import ModelRow, TokenRow, VersionRow
from gazelle.server.urls import ModelUrls

MAX_REPLICAS = 100
MAX_TAIL = 10_000
MAX_VERSION = 1 << 30
MAX_ID = (1 << 31) - 1   # the largest integer every database stores

api = Blueprint("api", __name__, url_prefix="/api/v1")
health = Blueprint("health", __name__)


def _auth() -> Auth:
    return state().auth


# -- parameters ------------------------------------------------------------------------------------

def _flag(name: str, default: bool = False) -> bool:
    raw = request.args.get(name)
    value = query_flag(raw, default)
    if value is None:
        raise BadRequest(f"{name}: expected true or false, got {raw!r}")
    return value


def _number(value: Any, name: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"{name}: expected an integer, got {json.dumps(value)}")
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {value!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}, got {number}")
    return number


def _arg(name: str, default: int, *, low: int, high: int) -> int:
    raw = request.args.get(name)
    return default if raw is None else _number(raw, name, low=low, high=high)


def _resources() -> dict[str, Any] | None:
    """``?resources=`` (JSON, DESIGN section 1's shapes), checked now so a typo never fails a deploy later."""
    raw = request.args.get("resources")
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):   # nesting deep enough to exhaust the parser is no JSON we take
        raise BadRequest("resources: expected JSON such as {\"memory\": \"1Gi\"}") from None
    Resources.of(value)   # raises BadRequest naming the field
    return dict(value) if value else None


def _json_object() -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(f"the body must be JSON (Content-Type: application/json), "
                                   f"got {request.mimetype or 'no content type'}")
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError) as err:
        raise BadRequest(f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply to be a request of this API") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


# -- JSON shapes -----------------------------------------------------------------------------------

def _urls() -> ModelUrls:
    """A model's ``url`` (its Ingress on Kubernetes with a host template, else the gateway) and ``gateway_url``."""
    return state().pipeline.urls


def version_json(v: VersionRow) -> dict[str, Any]:
    return {"version": v.version, "digest": v.digest, "status": v.status, "public": v.public,
            "replicas": v.replicas, "resources": v.resources, "python": v.manifest.get("python"), "created": iso(v.created),
            "updated": iso(v.updated)}


def model_json(m: ModelRow, versions: list[VersionRow]) -> dict[str, Any]:
    return {"name": m.name, "public": m.public, "live_version": m.live_version,
            **_urls().of_model(m.name),
            "versions": [version_json(v) for v in versions], "created": iso(m.created), "updated": iso(m.updated)}


def _accepted(accepted: deployments.Accepted) -> tuple[Response, int]:
    job = accepted.job
    body: dict[str, Any] = {"job": job.id, "model": job.model, "status": job.status}
    if job.kind != "delete":   # a deleted model has no version to name and no URL to give
        body.update(version=accepted.version, **_urls().of_model(job.model))
    return jsonify(body), 202 if accepted.created else 200


# -- views -----------------------------------------------------------------------------------------

@api.post("/models/<name>/versions")
@require(_auth, "deploy")
def create_version(name: str) -> tuple[Response, int]:
    st = state()
    validate_name(name)
    public = _flag("public")
    replicas = _arg("replicas", 1, low=1, high=MAX_REPLICAS)
    resources = _resources()
    digest, manifest = uploads.receive(request, st.bundles_dir, st.settings.max_bundle_bytes, name,
                                       keep=st.pipeline.bundles)
    return _accepted(deployments.deploy_bundle(st, name, digest, manifest, public=public, replicas=replicas,
                                               resources=resources))


@api.get("/models")
@require(_auth, "predict")
def list_models() -> Response:
    store = state().store
    return jsonify({"models": [model_json(m, store.versions(m.name)) for m in store.models()]})


@api.get("/models/<name>")
@require(_auth, "predict")
def get_model(name: str) -> Response:
    model = deployments.model(state(), name)
    return jsonify(model_json(model, state().store.versions(name)))


@api.get("/models/<name>/logs")
@require(_auth, "deploy")
def model_logs(name: str) -> Response:
    model = deployments.model(state(), name)
    versions = state().store.versions(name)
    default = model.live_version or (versions[-1].version if versions else 1)
    number = _arg("version", default, low=1, high=MAX_VERSION)
    deployments.version(state(), name, number)
    tail = _arg("tail", 200, low=1, high=MAX_TAIL)
    lines = state().wiring.target.logs(name, number, tail=tail)
    return jsonify({"model": name, "version": number, "lines": [redact(line) for line in lines]})


@api.post("/models/<name>/rollback")
@require(_auth, "deploy")
def rollback(name: str) -> tuple[Response, int]:
    deployments.model(state(), name)
    body = _json_object()
    if "version" not in body:
        raise BadRequest("version: required (the version to make live again)")
    number = _number(body["version"], "version", low=1, high=MAX_VERSION)
    return _accepted(deployments.rollback(state(), name, number))


@api.delete("/models/<name>")
@require(_auth, "deploy")
def delete_model(name: str) -> tuple[Response, int]:
    return _accepted(deployments.delete(state(), name))


@api.get("/jobs/<job_id>")
@require(_auth, "predict")
def get_job(job_id: str) -> Response:
    body = job_json(deployments.job(state(), job_id), _urls())
    if not _sees_logs() and body["error"] is not None:
        body["error"] = events.without_logs(body["error"])
    return jsonify(body)


def _sees_logs() -> bool:
    """Runtime log lines may hold what a model printed: only deploy tokens read them (as on /logs)."""
    return allows(g.gazelle_token, "deploy")


@api.get("/jobs/<job_id>/events")
@require(_auth, "predict")
def job_events(job_id: str) -> Response:
    st = state()
    deployments.job(st, job_id)
    raw = request.headers.get("Last-Event-ID") or request.args.get("after") or "0"
    after = _number(raw, "Last-Event-ID", low=0, high=1 << 62)
    body = st.streams.open(events.stream(st.store, st.hub, job_id, after, logs=_sees_logs()))
    if body is None:
        raise Unavailable(f"this server already streams {st.streams.limit} job event streams; poll "
                          f"GET /api/v1/jobs/{job_id} instead, or try again", retry_after=1)
    return Response(stream_with_context(body), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def token_json(row: TokenRow) -> dict[str, Any]:
    """A token as the API shows it: never the secret, never its hash."""
    return {"id": row.id, "name": row.name, "scope": row.scope, "created": iso(row.created),
            "last_used": iso(row.last_used)}


@api.post("/tokens")
@require(_auth, "admin")
def create_token() -> tuple[Response, int]:
    body = _json_object()
    if "scope" not in body:
        raise BadRequest("scope: required (one of predict, deploy, admin)")
    scope = check_scope(body["scope"])
    name = check_name(body["name"]) if body.get("name") is not None else None
    token, row = state().auth.create_token(scope, name)
    return jsonify({"token": token, **token_json(row)}), 201


@api.get("/tokens")
@require(_auth, "admin")
def list_tokens() -> Response:
    return jsonify({"tokens": [token_json(row) for row in state().store.tokens()]})


@api.delete("/tokens/<token_id>")
@require(_auth, "admin")
def revoke_token(token_id: str) -> Response:
    number = _number(token_id, "id", low=1, high=MAX_ID)
    row = state().auth.revoke(number)
    if row is None:
        raise NotFound(f"token {number} not found (or already revoked)")
    return jsonify({"revoked": token_json(row)})


@api.get("/openapi.json")
def openapi_document() -> Response:
    from gazelle.server.openapi import document

    return jsonify(document(state().settings.base_url))


# -- health ----------------------------------------------------------------------------------------

@health.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    st = state()
    problems: list[str] = []
    try:
        st.store.ping()
    except Exception as err:
        problems.append(f"the database does not answer: {type(err).__name__}")
    if st.settings.run_jobs and not st.runner.alive():
        problems.append("the job runner has stopped")
    elif st.settings.run_jobs and not st.runner.ready:
        problems.append("restoring the live versions after a start" if st.runner.phase == "recovering"
                        else "starting the job runner")
    body: Mapping[str, Any] = {"status": "ready" if not problems else "unavailable", "problems": problems,
                               "runs_jobs": st.runner.is_runner}
    return jsonify(body), 200 if not problems else 503


@health.get("/metrics")
def metrics() -> Response:
    from gazelle.server.metrics import CONTENT_TYPE

    return Response(state().metrics.render(), content_type=CONTENT_TYPE)

