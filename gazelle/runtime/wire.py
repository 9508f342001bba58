"""From the WSGI request to a parsed JSON value, and the request id, with every refusal as a typed error.

Order of checks: content type (415), declared length against the limit before parsing anything (413;
a refused body of reasonable size is drained so that the client can read the answer), reading (capped
as well when the body is chunked and has no length), UTF-8 (400), JSON (400). orjson
parses valid bodies; it refuses NaN/Infinity literals and numbers beyond float range, which the stdlib
parser accepts, so such bodies are parsed again with ``json.loads`` and the schema then answers
"expected a finite number" (422) with the field's path. The stdlib parser recurses, so a nesting-depth
guard runs before it: a body of 100000 ``[`` is a 400, never a RecursionError.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import orjson

from gazelle.booleans import query_flag
from gazelle.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

MAX_FALLBACK_DEPTH = 200
DRAIN_MAX_BYTES = 32 * 1024 * 1024  # a refused body up to this size is read and dropped; larger: the socket closes
_READ_CHUNK = 64 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NON_FINITE = re.compile(r"NaN|Infinity|[0-9][eE]\+?[0-9]{3}")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def request_id(given: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is a safe token (max 128 of ``[A-Za-z0-9._-]``), else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(12).hex()


def check_content_type(environ: Mapping[str, Any]) -> None:
    raw = environ.get("CONTENT_TYPE") or ""
    media, _, params = raw.partition(";")
    if media.strip().lower() == "application/json":
        charset = _param(params, "charset")
        if charset is None or charset.lower() in ("utf-8", "utf8"):
            return
        raise UnsupportedMediaType(f"request bodies must be UTF-8 JSON, got charset={charset}",
                                   hint="send Content-Type: application/json")
    shown = raw.strip() or "none"
    raise UnsupportedMediaType(f"request bodies must be JSON, got Content-Type {shown}",
                               hint="send Content-Type: application/json")


def _param(params: str, name: str) -> str | None:
    for part in params.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


def read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes: by Content-Length before reading, or while reading."""
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH")
    if declared:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length is not a number: {declared[:40]!r}") from None
        if length < 0:
            raise BadRequest("Content-Length is negative")
        if length > limit:
            if length <= DRAIN_MAX_BYTES:
                _discard(stream, length)
            raise _too_large(f"the request body is {length} bytes", limit)
        return stream.read(length) if length else b""
    if not environ.get("wsgi.input_terminated"):
        # Without a length, WSGI only allows reading a stream the server terminates (chunked bodies).
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            _discard(stream, DRAIN_MAX_BYTES - size)
            raise _too_large("the request body is larger than that", limit)
        chunks.append(chunk)


def _discard(stream: Any, length: int) -> None:
    """Read and drop a refused body. Clients that send the whole body before reading the answer (most
    of them) would otherwise get a connection reset instead of the 413, when the server closes a
    socket that still holds unread data."""
    while length > 0:
        chunk = stream.read(min(_READ_CHUNK, length))
        if not chunk:
            return
        length -= len(chunk)


def _too_large(what: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{what}; this endpoint takes at most {limit} bytes",
                           hint="send fewer rows per request, or raise GAZELLE_MAX_BODY_BYTES")


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; NaN/Infinity come back as floats for the schema to refuse."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        problem = str(err)
    if not body:
        raise BadRequest('the request body is empty; send {"instances": [row, ...]}')
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(f"the request body is not valid UTF-8 (bad byte at position {err.start})") from None
    if problem.startswith("depth limit exceeded"):
        raise _too_deep()
    if _NON_FINITE.search(text):
        if _deeper_than(text, MAX_FALLBACK_DEPTH):
            raise _too_deep()
        try:
            return json.loads(text)
        except RecursionError:
            raise _too_deep() from None
        except ValueError:
            pass  # not a NaN matter after all: orjson's message points at the real problem
    raise BadRequest(f"the request body is not valid JSON: {problem}")


def _too_deep() -> BadRequest:
    return BadRequest("the request body is nested too deeply to be a batch of rows")


def _deeper_than(text: str, limit: int) -> bool:
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def flag(query: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter (``gazelle.booleans``): absent -> False, empty -> True."""
    raw = query.get(name)
    value = query_flag(raw)
    if value is None:
        raise BadRequest(f"query parameter {name} must be true or false, got {str(raw)[:40]!r}")
    return value
