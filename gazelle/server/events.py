"""Job progress as server-sent events: replay what the store holds, then follow until the job ends.

Every event a job records is a row in ``job_events`` (its id is the SSE ``id:``, so a client that
reconnects with ``Last-Event-ID`` resumes where it stopped). A follower wakes when the job runner in
this process records something (``EventHub``), and polls the store once a second otherwise, which is
how it follows a job that another server process runs. The ``end`` event carries the final job JSON
and closes the stream.

Runtime and build log lines are for deploy tokens: ``stream(..., logs=False)`` leaves out the ``log``
events and the ``logs`` of the final job's error, as ``GET /jobs/{id}`` does for such a token.

``gazelle.redaction.redact`` scrubs what could carry a secret (passwords inside URLs, bearer tokens,
known secret values) from every line before it is recorded.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterable, Iterator, Mapping

from gazelle.server.store import EventRow, Store

KEEPALIVE_SECONDS = 15.0
POLL_SECONDS = 1.0


class StreamBudget:
    """At most ``limit`` open event streams per process: each holds a request thread for as long as
    its job runs, and predictions must always find one. One stream over the budget is refused (503
    with Retry-After; the client then polls the job instead). A client that goes away frees its slot
when the stream next writes to it: at most ``KEEPALIVE_SECONDS`` later."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def open(self, body: Iterable[bytes]) -> Iterator[bytes] | None:
        """``body`` holding one slot until it ends or is closed; None when none is free."""
        if not self._slots.acquire(blocking=False):
            return None
        return self._held(iter(body))

    def _held(self, body: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from body
        finally:
            self._slots.release()

class EventHub:
    """Wakes the event streams of this process when a job records an event."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self.closed = False

    def close(self) -> None:
        """The server is stopping: open streams end (clients reconnect with Last-Event-ID elsewhere)."""
        with self._cond:
            self.closed = True
            self._generation += 1
            self._cond.notify_all()

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def generation(self) -> int:
        with self._cond:
            return self._generation

    def wait(self, seen: int, timeout: float) -> int:
        """Block until something happened after generation ``seen`` (or ``timeout``); the new generation."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout=timeout)
            return self._generation


def without_logs(error: Mapping[str, Any]) -> dict[str, Any]:
    """A job's error without its log lines."""
    return {k: v for k, v in error.items() if k != "logs"}


def format_event(row: EventRow, *, logs: bool = True) -> bytes:
    data_value = row.data
    if not logs and row.kind == "end" and isinstance(row.data.get("error"), dict):
        data_value = {**row.data, "error": without_logs(row.data["error"])}
    data = json.dumps(data_value, separators=(",", ":"))
    return f"id: {row.id}\nevent: {row.kind}\ndata: {data}\n\n".encode("utf-8")


def stream(store: Store, hub: EventHub, job_id: str, after: int = 0,
           keepalive: float = KEEPALIVE_SECONDS, *, logs: bool = True) -> Iterator[bytes]:
    """The SSE byte stream of one job: every event after id ``after``, then live ones, until ``end``
    (or until the server stops: the client then reconnects). ``logs=False``: without log lines."""
    yield b"retry: 1000\n\n"
    last_sent = time.monotonic()
    while not hub.closed:
        seen = hub.generation()
        rows = store.events(job_id, after)
        for row in rows:
            after = row.id
            if row.kind == "log" and not logs:
                continue
            yield format_event(row, logs=logs)
            if row.kind == "end":
                return
        if rows:
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= keepalive:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()
        hub.wait(seen, POLL_SECONDS)
