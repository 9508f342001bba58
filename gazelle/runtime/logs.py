"""JSON log lines on stderr: one access line per request, and the runtime's events.

Events (``model_loaded``, ``environment_differences``, ``model_error`` ...) go through the
``gazelle.runtime`` logger, which gets a JSON handler only when no handler is configured anywhere up its
chain (as Flask does: an application that configures logging keeps its own). The access log bypasses
``logging``: it sits on every request's path, so it is one orjson call and one ``write(2)`` per line,
which stays atomic on a pipe because lines are far below PIPE_BUF. Paths are logged without the query
string, and no body or header value is ever logged (tokens travel in both).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable

import orjson

logger = logging.getLogger("gazelle.runtime")

_MAX_PATH = 512


class _Clock:
    """ISO-8601 UTC timestamps with milliseconds; strftime runs once per second, not per line."""

    def __init__(self) -> None:
        self._cached = (-1, "")  # one tuple, swapped whole: threads never see a half-updated pair

    def iso(self, now: float) -> str:
        second = int(now)
        cached_second, prefix = self._cached
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, prefix)
        return f"{prefix}.{int((now - second) * 1000):03d}Z"


_clock = _Clock()


def timestamp(now: float | None = None) -> str:
    return _clock.iso(time.time() if now is None else now)


def _stderr_write(line: bytes) -> None:
    try:
        os.write(2, line)
    except OSError:
        pass  # stderr closed or full: a lost log line must not fail the request it describes


class AccessLog:
    """Writes one JSON line per request. ``write`` receives the complete line, newline included."""

    def __init__(self, write: Callable[[bytes], Any] | None = None) -> None:
        self._write = write or _stderr_write

    def __call__(self, method: str, path: str, status: int, duration_ms: float, request_id: str,
                 remote: str) -> None:
        if len(path) > _MAX_PATH:
            path = path[:_MAX_PATH] + "..."
        self._write(orjson.dumps(
            {"ts": timestamp(), "event": "request", "method": method, "path": path, "status": status,
             "duration_ms": round(duration_ms, 3), "request_id": request_id, "remote": remote,
             "pid": os.getpid()},
            option=orjson.OPT_APPEND_NEWLINE,
        ))


class JsonFormatter(logging.Formatter):
    """A record as one JSON object. Gazelle events carry their fields; other loggers' records (gunicorn's)
    become ``{"logger", "message"}``."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {"ts": timestamp(record.created), "level": record.levelname.lower()}
        fields = getattr(record, "gazelle_fields", None)
        if fields is not None:
            body["event"] = record.msg
            body.update(fields)
        else:
            body["logger"] = record.name
            body["message"] = record.getMessage()
        if record.exc_info and "traceback" not in body:
            body["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


def _has_handler(log: logging.Logger) -> bool:
    current: logging.Logger | None = log
    while current is not None:
        if current.handlers:
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def configure() -> None:
    """Give the ``gazelle.runtime`` logger a JSON stderr handler unless logging is configured already."""
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not _has_handler(logger):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event: ``{"ts", "level", "event": name, **fields}``."""
    logger.log(level, name, extra={"gazelle_fields": fields})
