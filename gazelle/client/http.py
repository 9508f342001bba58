"""The client's HTTP layer over httpx: one ``Client`` per connection, typed errors, server-sent events.

Every error answer (``{"error": {"type", "message", "hint"?}}``) becomes the matching error of
``gazelle.errors`` (``NotFound``, ``Unauthorized``, ``SchemaError`` ...) carrying ``status``; an answer
the client cannot read becomes ``APIError``. A server that cannot be reached is one sentence naming
the URL, with a hint. The token travels only in the ``Authorization`` header: it is never part of a
URL, a message or a ``repr``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import httpx

from gazelle import __version__
from gazelle.client.config import LOCAL_SERVER, Connection
from gazelle.errors import (APIError, BadRequest, BundleError, Conflict, Forbidden, GazelleError,
                            InsufficientStorage, InvalidName, MethodNotAllowed, ModelError, NotFound,
                            PayloadTooLarge, SchemaError, ServerUnreachable, Unauthorized, UnsupportedMediaType)

API = "/api/v1"

_BY_TYPE: dict[str, type[GazelleError]] = {
    "bad_request": BadRequest, "invalid_name": InvalidName, "bundle_error": BundleError,
    "unauthorized": Unauthorized, "forbidden": Forbidden, "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed, "conflict": Conflict, "payload_too_large": PayloadTooLarge,
    "unsupported_media_type": UnsupportedMediaType, "model_error": ModelError,
    "insufficient_storage": InsufficientStorage,
}
_BY_STATUS: dict[int, type[GazelleError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
    409: Conflict, 413: PayloadTooLarge, 415: UnsupportedMediaType, 507: InsufficientStorage,
}


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``event`` name, parsed JSON ``data`` (or the raw text), optional ``id``."""

    event: str
    data: Any
    id: str | None = None


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def unreachable(url: str, cause: Exception) -> ServerUnreachable:
    where = origin(url)
    hint = "start one with `gazelle server`, or set GAZELLE_SERVER"
    if where != LOCAL_SERVER:
        hint = "check the URL and that the server runs; set it with GAZELLE_SERVER or configure(server=...)"
    return ServerUnreachable(f"no Gazelle server at {where}", hint=hint, detail=f"{type(cause).__name__}: {cause}")


def error_from_answer(response: httpx.Response) -> GazelleError:
    """The typed error an error answer stands for; ``status`` is set on it."""
    status = response.status_code
    error: dict[str, Any] = {}
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
    except ValueError:
        pass
    error_type = str(error.get("type") or "")
    message = str(error.get("message") or "") or \
        f"{origin(str(response.url))} answered {status} {response.reason_phrase}".rstrip()
    hint = error.get("hint") or None
    if status == 401 and not hint:
        hint = "pass token=, set GAZELLE_TOKEN, or use the admin token the server wrote to its data dir"
    if status == 507 and not error_type:
        # A proxy in front of the server may answer for it, without a Gazelle error body.
        message, hint = "no space left on the server", hint or "free space on the server, then try again"
    err: GazelleError
    if error_type == "schema_error":
        path = str(error.get("path") or "")
        problem = message[len(path) + 2:] if path and message.startswith(f"{path}: ") else message
        err = SchemaError(path, problem, hint=hint)
    elif error_type in _BY_TYPE:
        err = _BY_TYPE[error_type](message, hint=hint)
    elif not error_type and status in _BY_STATUS:
        err = _BY_STATUS[status](message, hint=hint)
    else:
        err = APIError(status, error_type or "http_error", message, hint=hint)
    err.status = status  # type: ignore[attr-defined]
    return err


class Client:
    """Requests to one Gazelle server (and to the model endpoints behind its gateway)."""

    def __init__(self, connection: Connection, *, timeout: float = 30.0) -> None:
        self.connection = connection
        headers = {"User-Agent": f"gazelle/{__version__}"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self._http = httpx.Client(base_url=connection.server, headers=headers, timeout=timeout,
                                  transport=connection.transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"Client(server={self.connection.server!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def server(self) -> str:
        return self.connection.server

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json_body: Any = None, content: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> httpx.Response:
        """Send one request; an error answer raises its typed error, a network failure one sentence."""
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if json_body is not None:
            kwargs["json"] = json_body
        if content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = timeout
        url = path if path.startswith(("http://", "https://")) else f"{self.server}{path}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise unreachable(url, exc) from None
        except httpx.TimeoutException as exc:
            raise GazelleError(f"{origin(url)} did not answer {method} {urlsplit(url).path} in time",
                               detail=f"{type(exc).__name__}: {exc}") from None
        except httpx.TransportError as exc:
            raise GazelleError(f"lost the connection to {origin(url)} during {method} {urlsplit(url).path}",
                               detail=f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise error_from_answer(response)
        return response

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """A build-server API call (``path`` under ``/api/v1``); returns the parsed JSON answer."""
        response = self.request(method, f"{API}{path}", **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise APIError(response.status_code, "bad_answer",
                           f"{self.server} answered {method} {API}{path} with something that is not JSON") from None

    def events(self, path: str, *, last_event_id: str | None = None, read_timeout: float = 60.0) -> Iterator[Event]:
        """Follow a server-sent event stream under ``/api/v1`` until the server closes it.

        A dropped connection raises ``GazelleError`` (from ``httpx.TransportError``); callers reconnect.
        """
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        url = f"{self.server}{API}{path}"
        timeout = httpx.Timeout(10.0, read=read_timeout)
        try:
            with self._http.stream("GET", f"{API}{path}", headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_answer(response)
                yield from parse_events(response.iter_lines())
        except httpx.ConnectError as exc:
            raise unreachable(url, exc) from None
        except httpx.TransportError as exc:
            raise GazelleError(f"the event stream from {origin(url)} broke off",
                               detail=f"{type(exc).__name__}: {exc}") from None


def parse_events(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events from text lines (the subset servers send: event, data, id, comments)."""
    name, event_id = "message", None
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield Event(name, value, event_id)
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue
        key, _, value_text = line.partition(":")
        value_text = value_text[1:] if value_text.startswith(" ") else value_text
        if key == "event":
            name = value_text
        elif key == "data":
            data.append(value_text)
        elif key == "id":
            event_id = value_text
    # An event cut off by the end of the stream is discarded, as the SSE spec says.
