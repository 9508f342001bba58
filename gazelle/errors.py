"""Every error Gazelle raises, in one tree.

    GazelleError                      base; ``code`` is the HTTP status it maps to, ``type`` its JSON name
    ├── BadRequest (ValueError)       400  malformed JSON, bad encoding, bad parameters
    │   ├── InvalidName               400  not a DNS-1123 label
    │   └── SchemaError               422  an instance does not match the model's input schema
    ├── BundleError (ValueError)      422  a bundle that cannot be read (format, members, digest)
    ├── EnvironmentMismatch           500  the runtime's python/pins differ from the bundle's
    ├── ModelError                    500  the model itself raised (load or predict)
    ├── Unauthorized (PermissionError) 401 no token, or an unknown one
    ├── Forbidden (PermissionError)   403  a token without the scope the call needs
    ├── NotFound (LookupError)        404
    ├── MethodNotAllowed              405
    ├── Conflict                      409
    ├── PayloadTooLarge               413
    ├── UnsupportedMediaType          415
    ├── Unavailable                   503  answered with Retry-After where waiting helps
    │   └── Restoring                 503  a model whose runtime is being brought back after a restart
    ├── InsufficientStorage (OSError) 507  the server's disk is full
    ├── ConfigError (ValueError)      a setting that cannot work (bad URL, unknown target ...)
    ├── BuildError                    a builder could not make the artifact (pip, base image, engine)
    ├── RegistryError                 a container registry refused or failed (status, code, retryable)
    ├── TargetError                   a target could not run a release (pods, processes)
    ├── DeployError                   a deploy failed: which stage, why, the last log lines
    ├── ServerUnreachable (ConnectionError) no Gazelle server answers at the configured URL
    └── APIError                      the client's view of an error answer from a Gazelle server

Each error writes its own sentence from domain values. What a person in a notebook sees is
``str(err)``: one sentence and, where there is one, a hint. Tracebacks and raw logs go on ``detail``.
"""
from __future__ import annotations

from typing import Any, Sequence


class GazelleError(Exception):
    """Base of all Gazelle errors."""

    code: int = 500
    type: str = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def headers(self) -> dict[str, str]:
        """Extra headers of the error answer (``Retry-After`` ...)."""
        return {}

    def to_json(self) -> dict[str, Any]:
        """The body of an error answer: ``{"error": {"type", "message"}}``; never the detail."""
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        return {"error": body}


class BadRequest(GazelleError, ValueError):
    code = 400
    type = "bad_request"


class InvalidName(BadRequest):
    type = "invalid_name"


class SchemaError(BadRequest):
    """An instance does not fit the input schema; ``path`` names the field (``instances[3][1]``)."""

    code = 422
    type = "schema_error"

    def __init__(self, path: str, problem: str, **kw: Any) -> None:
        super().__init__(f"{path}: {problem}" if path else problem, **kw)
        self.path = path
        self.problem = problem


class BundleError(GazelleError, ValueError):
    code = 422
    type = "bundle_error"


class EnvironmentMismatch(GazelleError):
    """The running environment is not the one the bundle was made in."""

    type = "environment_mismatch"

    def __init__(self, differences: Sequence[str]) -> None:
        self.differences = list(differences)
        lines = "\n".join(f"  - {d}" for d in self.differences)
        super().__init__(
            f"this environment differs from the bundle's in {len(self.differences)} "
            f"place(s):\n{lines}",
            hint="install the bundle's pins, or set GAZELLE_RUNTIME_ENV_CHECK=warn to start anyway",
        )


class ModelError(GazelleError):
    type = "model_error"


class Unauthorized(GazelleError, PermissionError):
    code = 401
    type = "unauthorized"


class Forbidden(GazelleError, PermissionError):
    code = 403
    type = "forbidden"


class NotFound(GazelleError, LookupError):
    code = 404
    type = "not_found"


class MethodNotAllowed(GazelleError):
    code = 405
    type = "method_not_allowed"


class Conflict(GazelleError):
    code = 409
    type = "conflict"


class PayloadTooLarge(GazelleError):
    code = 413
    type = "payload_too_large"


class UnsupportedMediaType(GazelleError):
    code = 415
    type = "unsupported_media_type"


class Unavailable(GazelleError):
    """Cannot answer now; ``retry_after`` (seconds) when trying again soon can help."""

    code = 503
    type = "unavailable"

    def __init__(self, message: str, *, retry_after: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class Restoring(Unavailable):
    type = "restoring"

    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"model {name} version {version} is being restored after a server restart; "
                         "try again in a moment", retry_after=2)


class InsufficientStorage(GazelleError, OSError):
    """The server ran out of disk space while storing what it was sent (ENOSPC)."""

    code = 507
    type = "insufficient_storage"


class ConfigError(GazelleError, ValueError):
    type = "config_error"


class BuildError(GazelleError):
    """A builder could not make what a target runs: the message names the step and the cause."""

    type = "build_error"


class RegistryError(GazelleError):
    """A registry answered with an error. ``url`` is already redacted (no credentials, no tokens)."""

    type = "registry_error"

    def __init__(self, message: str, *, status: int | None = None, registry_code: str | None = None,
                 retryable: bool = False, url: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.registry_code = registry_code
        self.retryable = retryable
        self.url = url


class TargetError(GazelleError):
    type = "target_error"


class DeployError(GazelleError):
    """A deploy failed at ``stage``; ``logs`` holds the last log lines that explain it."""

    type = "deploy_failed"

    def __init__(self, stage: str, cause: str, *, logs: Sequence[str] = (), job: str | None = None,
                 **kw: Any) -> None:
        self.stage = stage
        self.cause = cause
        self.logs = list(logs)
        self.job = job
        message = f"deploy failed at stage '{stage}': {cause}"
        if self.logs:
            message += "\nlast log lines:\n" + "\n".join(f"  | {line}" for line in self.logs[-20:])
        super().__init__(message, **kw)


class ServerUnreachable(GazelleError, ConnectionError):
    """No Gazelle server answers at the URL the client was given."""

    code = 503
    type = "server_unreachable"


class APIError(GazelleError):
    """An error answer from a Gazelle server, as the client sees it."""

    type = "api_error"

    def __init__(self, status: int, error_type: str, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.error_type = error_type
