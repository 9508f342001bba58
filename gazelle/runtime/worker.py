"""The runtime's gunicorn worker: gthread, with kept-alive connections spread evenly over the workers,
and read on by the thread that answered them.

gunicorn's workers share one listening socket, and whichever worker's event loop wakes first takes
the connection. A keep-alive client (wrk, a pooled HTTP client, the server's nginx front) opens its
connections in one burst, and one worker often takes all of them: every request then lands on that
worker while the other idles, and a model with two workers serves at the speed of one, for as long as
the connections live. Measured with ``wrk -c8`` on two workers (random forest, batching on): a quarter
of the runs gave one worker all eight connections, at a third of the requests/s of the others.

``BalancedThreadWorker`` publishes how many connections it holds in a table shared by the workers
(``ConnectionTable``, made by the master before it forks). A worker that holds more than the least
loaded live worker lets a new connection go by for up to ``HOLD_SECONDS``, so that one takes it; once
the hold is over it takes whatever is still waiting, so a busy or wedged neighbour never leaves a
client waiting longer than that. A worker two or more connections ahead (its connections were opened
while the other was still booting, say) answers a request now and then with ``Connection: close``,
and the client's next connection goes to the other. Counts are read without a lock: two workers that
accept at the same instant can end one connection apart, which is as even as the number of
connections allows.

After an answer on a kept-alive connection, the request thread waits up to ``LINGER_SECONDS`` for the
next request on it (when another thread is free), instead of handing the connection back to the
event loop, which hands it to a thread again: a client in a closed loop, or a proxy's pooled
connection, skips two thread wake-ups per request. Measured on two workers (``wrk``, one row per
request): 10 to 17% less CPU per request, and the one-connection p50 of the text model from 1.30 to
1.13 ms.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import selectors
import threading
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

HOLD_SECONDS = 0.02
SHED_INTERVAL_SECONDS = 0.05
LINGER_SECONDS = 0.005


class ConnectionTable:
    """Per-worker connection counts in shared memory: ``(worker age, pid, connections)`` per slot.

    Made in the master before the fork. The single-threaded master hands slots out (``claim``, in
    gunicorn's ``pre_fork``, by the worker's age, which gunicorn never reuses) and frees them when a
    worker exits (``release``, in ``child_exit``); a worker writes only its own slot's pid and count.
    """

    def __init__(self, slots: int) -> None:
        self._cells = multiprocessing.RawArray(ctypes.c_long, 3 * slots)
        self.slots = slots

    def claim(self, age: int) -> int | None:
        """A free slot for the worker about to be forked (None: all taken; it then goes unbalanced)."""
        for slot in range(self.slots):
            if self._cells[3 * slot] == 0:
                self._cells[3 * slot:3 * slot + 3] = [age, 0, 0]
                return slot
        return None

    def start(self, slot: int, pid: int) -> None:
        self._cells[3 * slot + 1] = pid

    def release(self, age: int) -> None:
        for slot in range(self.slots):
            if self._cells[3 * slot] == age:
                self._cells[3 * slot:3 * slot + 3] = [0, 0, 0]

    def publish(self, slot: int, connections: int) -> None:
        self._cells[3 * slot + 2] = connections

    def ahead(self, slot: int, by: int = 1) -> bool:
        """Whether this slot's worker holds at least ``by`` connections more than another live worker."""
        mine = self._cells[3 * slot + 2]
        return any(self._cells[3 * other + 1] > 0 and self._cells[3 * other + 2] <= mine - by
                   for other in range(self.slots) if other != slot)


class BalancedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker that leaves a new connection to a less loaded worker (module docstring).

    The master sets ``worker.table`` and ``worker.slot`` before the fork; without them (or with no
    free slot) the worker is plain gthread.
    """

    table: ConnectionTable | None = None
    slot: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seat: tuple[ConnectionTable, int] | None = None
        self._hold_until: float | None = None
        self._last_shed = 0.0
        self._busy = 0   # request threads in handle()
        self._busy_lock = threading.Lock()

    def init_process(self) -> None:
        if self.table is not None and self.slot is not None:
            self._seat = (self.table, self.slot)
            self.table.start(self.slot, os.getpid())
        super().init_process()

    def accept(self, listener: Any) -> None:
        if self._seat is not None and self._seat[0].ahead(self._seat[1]):
            # Leave this connection to a worker that holds fewer, for HOLD_SECONDS at most.
            self._hold_until = time.monotonic() + HOLD_SECONDS
            super().set_accept_enabled(False)
            return
        self._take(listener)

    def handle(self, conn: Any) -> Any:
        # Runs in a request thread. After an answer on a kept-alive connection, a client that sends its
        # next request at once (a closed loop, a proxy's pooled connection) finds this thread still
        # reading: the connection skips the trip back to the event loop and the thread hand-off.
        with self._busy_lock:
            self._busy += 1
        try:
            while True:
                keep = super().handle(conn)
                if keep is not True or not self._linger(conn):
                    return keep
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _linger(self, conn: Any) -> bool:
        """Whether the next request arrived within LINGER_SECONDS (and a thread is free for others)."""
        if not self.alive or self._busy >= self.cfg.threads - 1:
            return False
        if conn.parser.unreader.buf.getvalue():
            return True
        with selectors.DefaultSelector() as sel:
            try:
                sel.register(conn.sock, selectors.EVENT_READ)
                return bool(sel.select(LINGER_SECONDS))
            except (OSError, ValueError):
                return False

    def handle_request(self, req: Any, conn: Any) -> Any:
        # Runs in a request thread. Connections pinned before a worker existed (all of them opened
        # while the other was still booting, say) stay pinned for as long as the client keeps them:
        # while two or more ahead, answer one request in SHED_INTERVAL_SECONDS with "Connection: close",
        # and the client's next connection goes to a worker that holds fewer.
        if self._seat is not None and self._seat[0].ahead(self._seat[1], by=2):
            now = time.monotonic()
            if now - self._last_shed >= SHED_INTERVAL_SECONDS:
                self._last_shed = now
                req.must_close = True
        return super().handle_request(req, conn)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and self._hold_until is not None:
            return   # holding back: wait_for_and_dispatch_events resumes when the hold is over
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        self._publish()
        if self._hold_until is not None:
            left = self._hold_until - time.monotonic()
            if left > 0:
                timeout = min(timeout, left)
            else:
                self._hold_until = None
                if self.alive:
                    # Whatever no other worker took meanwhile (none left: accept meets EAGAIN, which
                    # gunicorn ignores).
                    for listener in self.sockets:
                        self._take(listener)
                    super().set_accept_enabled(self.nr_conns < self.worker_connections)
        super().wait_for_and_dispatch_events(timeout)
        self._publish()

    def _take(self, listener: Any) -> None:
        super().accept(listener)
        self._publish()

    def _publish(self) -> None:
        if self._seat is not None:
            self._seat[0].publish(self._seat[1], self.nr_conns)
