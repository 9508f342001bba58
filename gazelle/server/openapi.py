"""The OpenAPI 3.0 document of the build server's API (``GET /api/v1/openapi.json``).

Written by hand beside the views in ``api.py``; a test checks it against the OpenAPI specification
and that every route of the ``api`` blueprint appears in it.
"""
from __future__ import annotations

from typing import Any

from gazelle.server.jobs import STAGES

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    why = {400: "Bad parameters or body (the message names the field)",
           401: "No token, or an unknown one", 403: "The token lacks the scope this call needs",
           404: "No such model, version or job", 413: "The bundle is too large",
           415: "Wrong Content-Type", 422: "The bundle cannot be read", 500: "A server-side failure",
           507: "No space left on the server to store the bundle"}
    return {str(code): _json(_ref("Error"), why[code]) for code in codes}


_NAME = {"name": "name", "in": "path", "required": True, "description": "Model name (a DNS-1123 label)",
         "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 40}}
_JOB_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": "string", "format": "date-time", "nullable": True}
_TOKEN_ID = {"name": "id", "in": "path", "required": True, "description": "The token's public id",
             "schema": {"type": "integer", "minimum": 1, "maximum": 2147483647}}

_MODEL_URLS: dict[str, Any] = {
    "url": {"type": "string", "description": "where the model answers: its own Ingress on Kubernetes with "
            "an Ingress host template (GAZELLE_K8S_INGRESS_HOST), else the gateway"},
    "gateway_url": {"type": "string", "description": "the model behind this server's gateway, /m/{name}"}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["type", "message"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}, "hint": {"type": "string"},
                       "id": {"type": "string"}}}}},
    "Accepted": {"type": "object", "required": ["job"], "properties": {
        "job": {"type": "string"}, "version": {"type": "integer"}, "model": {"type": "string"},
        "status": {"type": "string"}, **_MODEL_URLS}},
    "Stage": {"type": "object", "required": ["name", "status"], "properties": {
        "name": {"type": "string", "enum": [*STAGES, "delete"]},
        "status": {"type": "string", "enum": ["pending", "running", "done", "failed", "skipped"]},
        "started": _NTIME, "finished": _NTIME, "message": {"type": "string", "nullable": True}}},
    "Job": {"type": "object", "required": ["id", "model", "status", "stages"], "properties": {
        "id": {"type": "string"}, "kind": {"type": "string", "enum": ["deploy", "rollback", "delete"]},
        "model": {"type": "string"}, "version": {"type": "integer", "nullable": True},
        "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
        "stage": {"type": "string", "nullable": True},
        "stages": {"type": "array", "items": _ref("Stage")},
        "error": {"type": "object", "nullable": True, "properties": {
            "stage": {"type": "string"}, "message": {"type": "string"},
            "logs": {"type": "array", "items": {"type": "string"}}}},
        **_MODEL_URLS, "created": _TIME, "started": _NTIME, "finished": _NTIME}},
    "Version": {"type": "object", "required": ["version", "digest", "status"], "properties": {
        "version": {"type": "integer"}, "digest": {"type": "string"},
        "status": {"type": "string", "enum": ["live", "ready", "failed", "retired", "deploying", "restoring", "down"]},
        "public": {"type": "boolean"}, "replicas": {"type": "integer"},
        "resources": {"type": "object", "nullable": True},
        "python": {"type": "string", "nullable": True}, "created": _TIME, "updated": _TIME}},
    "Token": {"type": "object", "required": ["id", "name", "scope", "created"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"},
        "scope": {"type": "string", "enum": ["predict", "deploy", "admin"]}, "created": _TIME,
        "last_used": {**_NTIME, "description": "to within a minute"}}},
    "Model": {"type": "object", "required": ["name", "public", "live_version", "url", "versions"], "properties": {
        "name": {"type": "string"}, "public": {"type": "boolean"},
        "live_version": {"type": "integer", "nullable": True}, **_MODEL_URLS,
        "versions": {"type": "array", "items": _ref("Version")}, "created": _TIME, "updated": _TIME}},
}


def _links(**links: tuple[str, dict[str, str]]) -> dict[str, Any]:
    """OpenAPI links: what a client (or a stateful fuzzer) can call next with values from this answer."""
    return {name: {"operationId": op, "parameters": params} for name, (op, params) in links.items()}


_MODEL = {"name": "$request.path.name"}
_JOB_LINKS = _links(
    GetJob=("getJob", {"id": "$response.body#/job"}), JobEvents=("jobEvents", {"id": "$response.body#/job"}))
_VERSION_LINKS = _links(
    GetJob=("getJob", {"id": "$response.body#/job"}), JobEvents=("jobEvents", {"id": "$response.body#/job"}),
    GetModel=("getModel", _MODEL), ModelLogs=("modelLogs", _MODEL), Rollback=("rollback", _MODEL),
    DeleteModel=("deleteModel", _MODEL))


def _with_links(response: dict[str, Any], links: dict[str, Any]) -> dict[str, Any]:
    return {**response, "links": links}


def document(server_url: str = "") -> dict[str, Any]:
    """The OpenAPI 3.0.3 document; ``server_url`` is where this server answers."""
    deploy_security: list[dict[str, list[str]]] = [{"bearer": []}]
    paths: dict[str, Any] = {
        "/models/{name}/versions": {"post": {
            "summary": "Deploy a bundle as a new version (the same bundle again names the existing version)",
            "operationId": "createVersion", "tags": ["models"], "security": deploy_security,
            "parameters": [_NAME,
                           {"name": "public", "in": "query", "schema": {"type": "boolean", "default": False},
                            "description": "serve predictions without a token"},
                           {"name": "replicas", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1}},
                           {"name": "resources", "in": "query", "schema": {"type": "string"},
                            "description": "JSON: Kubernetes' {\"requests\": {...}, \"limits\": {...}} or the "
                                           "shorthand {\"cpu\": \"500m\", \"memory\": \"1Gi\"}"}],
            "requestBody": {"required": True, "content": {"application/x-tar": {
                "schema": {"type": "string", "format": "binary"}}}},
            "responses": {"202": _with_links(_json(_ref("Accepted"), "A job deploys the version"), _VERSION_LINKS),
                          "200": _with_links(_json(_ref("Accepted"), "This bundle is already the live version"),
                                             _VERSION_LINKS),
                          **_errors(400, 401, 403, 413, 415, 422, 507)}}},
        "/models": {"get": {
            "summary": "List models", "operationId": "listModels", "tags": ["models"],
            "responses": {"200": _json({"type": "object", "properties": {
                "models": {"type": "array", "items": _ref("Model")}}}, "Every model"), **_errors(401)}}},
        "/models/{name}": {
            "get": {"summary": "A model and its versions", "operationId": "getModel", "tags": ["models"],
                    "parameters": [_NAME],
                    "responses": {"200": _json(_ref("Model"), "The model"), **_errors(400, 401, 404)}},
            "delete": {"summary": "Stop and delete every version of a model", "operationId": "deleteModel",
                       "tags": ["models"], "parameters": [_NAME],
                       "responses": {"202": _with_links(
                           _json(_ref("Accepted"), "A job stops and deletes the versions; follow it to its end"),
                           _JOB_LINKS),
                           **_errors(400, 401, 403, 404)}}},
        "/models/{name}/logs": {"get": {
            "summary": "The last lines a version's runtime wrote", "operationId": "modelLogs", "tags": ["models"],
            "parameters": [_NAME, {"name": "version", "in": "query",
                                   "schema": {"type": "integer", "minimum": 1, "maximum": 1 << 30}},
                           {"name": "tail", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 200}}],
            "responses": {"200": _json({"type": "object", "properties": {
                "model": {"type": "string"}, "version": {"type": "integer"},
                "lines": {"type": "array", "items": {"type": "string"}}}}, "Log lines"),
                **_errors(400, 401, 403, 404)}}},
        "/models/{name}/rollback": {"post": {
            "summary": "Make an earlier version live again", "operationId": "rollback", "tags": ["models"],
            "parameters": [_NAME],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["version"],
                "properties": {"version": {"type": "integer", "minimum": 1, "maximum": 1 << 30}}}}}},
            "responses": {"202": _json(_ref("Accepted"), "A job redeploys that version"),
                          "200": _json(_ref("Accepted"), "That version is already live"),
                          **_errors(400, 401, 403, 404, 415)}}},
        "/jobs/{id}": {"get": {
            "summary": "A job: status, stages, error", "operationId": "getJob", "tags": ["jobs"],
            "parameters": [_JOB_ID],
            "responses": {"200": _json(_ref("Job"), "The job"), **_errors(401, 404)}}},
        "/jobs/{id}/events": {"get": {
            "summary": "Server-sent events of a job: past events, then live ones, until `end`",
            "description": "`event: stage` data {stage, status, message}; `event: log` data {stage, line}; "
                           "last `event: end` data = the job. Reconnect with Last-Event-ID to resume.",
            "operationId": "jobEvents", "tags": ["jobs"],
            "parameters": [_JOB_ID, {"name": "Last-Event-ID", "in": "header",
                                     "schema": {"type": "integer", "minimum": 0, "maximum": 1 << 62}}],
            "responses": {"200": {"description": "An event stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 404)}}},
        "/tokens": {
            "post": {
                "summary": "Create a token (admin)", "operationId": "createToken", "tags": ["tokens"],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["scope"], "properties": {
                        "scope": {"type": "string", "enum": ["predict", "deploy", "admin"]},
                        "name": {"type": "string", "minLength": 1, "maxLength": 200, "nullable": True,
                                 "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$",
                                 "description": "a label; default: '<scope> token'"}}}}}},
                "responses": {"201": _with_links(_json({"allOf": [_ref("Token"), {
                    "type": "object", "required": ["token"], "properties": {"token": {
                        "type": "string", "description": "shown once; only its hash is stored"}}}]}, "The new token"),
                    _links(RevokeToken=("revokeToken", {"id": "$response.body#/id"}))),
                    **_errors(400, 401, 403, 415)}},
            "get": {
                "summary": "List the tokens that are not revoked (admin); never their secrets",
                "operationId": "listTokens", "tags": ["tokens"],
                "responses": {"200": _json({"type": "object", "required": ["tokens"], "properties": {
                    "tokens": {"type": "array", "items": _ref("Token")}}}, "Every live token"),
                    **_errors(401, 403)}}},
        "/tokens/{id}": {"delete": {
            "summary": "Revoke a token (admin): refused at once by this server process, within 5 s by all",
            "operationId": "revokeToken", "tags": ["tokens"], "parameters": [_TOKEN_ID],
            "responses": {"200": _json({"type": "object", "required": ["revoked"],
                                        "properties": {"revoked": _ref("Token")}}, "The revoked token"),
                          **_errors(400, 401, 403, 404)}}},
        "/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi", "tags": ["meta"], "security": [],
            "responses": {"200": {"description": "OpenAPI 3 document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Gazelle build server", "version": "1",
                 "description": "Deploy model bundles as live endpoints. Model endpoints are served by the "
                                "gateway at /m/{name}/ (and /m/{name}/v/{version}/)."},
        "servers": [{"url": f"{server_url.rstrip('/')}/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "scopes nest: admin > deploy > predict"}},
            "schemas": SCHEMAS,
        },
    }
