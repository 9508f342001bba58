"""The runtime's own errors and the ONE mapping from any exception to a JSON error answer.

Every answer is ``{"error": {"type", "message"}}``. Gazelle errors carry their status (``code``) and
sentence; werkzeug's HTTP exceptions (unknown path, wrong method) get the same shape. Anything else is
a bug or the model's fault: a 500 whose message holds an error id, while the traceback goes to the
log under that id only, never into the answer.
"""
from __future__ import annotations

import logging
import secrets
import traceback
from typing import Any

from werkzeug.exceptions import HTTPException

from gazelle.errors import GazelleError, ModelError
from gazelle.runtime import logs

_MAX_CAUSE = 500

_HTTP_TYPES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout", 411: "length_required",
    413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
    422: "schema_error", 431: "request_header_fields_too_large", 500: "internal_error",
    504: "timeout",
}


def new_error_id() -> str:
    return secrets.token_hex(4)


def describe(err: BaseException) -> str:
    """``"ValueError: the message"``, cut to a length that fits in a log line and an answer."""
    text = str(err)
    if len(text) > _MAX_CAUSE:
        text = text[:_MAX_CAUSE] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class ModelLoadFailed(ModelError):
    """Unpickling the model, or the model's own code run while unpickling, raised."""

    def __init__(self, cause: BaseException) -> None:
        self.error = describe(cause)
        super().__init__(f"the model raised while loading: {self.error}",
                         detail="".join(traceback.format_exception(cause)))


class ModelFailure(ModelError):
    """The model raised on input that passed the schema. The answer names the error id to look up."""

    def __init__(self, cause: BaseException, *, what: str = "the model raised") -> None:
        self.error_id = new_error_id()
        self.error = describe(cause)
        super().__init__(f"{what} {self.error} (error id {self.error_id})",
                         detail="".join(traceback.format_exception(cause)))

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["error"]["id"] = self.error_id
        return body


class ModelTimeout(ModelError):
    """The model did not answer a request within GAZELLE_RUNTIME_TIMEOUT seconds."""

    code = 504
    type = "timeout"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the model did not answer within {seconds:g} s (GAZELLE_RUNTIME_TIMEOUT)",
                         hint="send fewer rows per request, or raise GAZELLE_RUNTIME_TIMEOUT")


def error_answer(err: BaseException, *, request_id: str, method: str,
                 path: str) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """``(status, body, extra headers)`` for any exception; logs the ones that are the server's fault."""
    if isinstance(err, GazelleError):
        if isinstance(err, ModelFailure):
            logs.event("model_error", level=logging.ERROR, error_id=err.error_id, request_id=request_id,
                       error=err.error, traceback=err.detail)
        elif isinstance(err, ModelTimeout):
            logs.event("request_timeout", level=logging.ERROR, request_id=request_id, method=method,
                       path=path, seconds=err.seconds)
        elif err.code >= 500:
            logs.event("internal_error", level=logging.ERROR, request_id=request_id, error=describe(err),
                       traceback=err.detail)
        return err.code, err.to_json(), []
    if isinstance(err, HTTPException) and err.code is not None:
        headers: list[tuple[str, str]] = []
        if err.code == 404:
            message = f"nothing at {path}; see openapi.json for this endpoint's paths"
        elif err.code == 405:
            allowed = sorted(getattr(err, "valid_methods", None) or [])
            headers.append(("Allow", ", ".join(allowed)))
            usable = [m for m in allowed if m not in ("HEAD", "OPTIONS")] or allowed
            message = f"{method} is not allowed on {path}; use {' or '.join(usable)}"
        else:
            message = err.description or err.name
        return err.code, {"error": {"type": _HTTP_TYPES.get(err.code, "http_error"), "message": message}}, headers
    error_id = new_error_id()
    logs.event("internal_error", level=logging.ERROR, error_id=error_id, request_id=request_id,
               error=describe(err), traceback="".join(traceback.format_exception(err)))
    return 500, {"error": {"type": "internal_error",
                           "message": f"the runtime failed on this request (error id {error_id})",
                           "id": error_id}}, []
