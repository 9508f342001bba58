"""The watchdog of ``LocalTarget``: starts again a runtime that exited without being asked to.

One daemon thread, started by the target's first ``deploy`` or ``restore`` and stopped by its
``shutdown``, looks every ``interval`` seconds at the runtimes the target supervises. A runtime found
exited is started again after a delay that doubles with each restart in a row that never answered its
readiness check (1 s, 2 s, 4 s ... 30 s), so a version that crashes while loading does not spin; once a
restarted runtime answers, the next exit waits 1 s again. Each step is one line in the version's log.

The watchdog decides when; the target decides whether and how. ``watched`` lists only runtimes that
are fully started and not being stopped, and ``respawn`` and ``note`` check that again under the
target's lock, so a version being stopped or deployed is never started again behind its caller's back.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, Sequence, TypeVar

from gazelle.errors import TargetError

log = logging.getLogger(__name__)


class Runtime(Protocol):
    name: str
    version: int
    pid: int

    @property
    def address(self) -> str: ...   # where it listens (a socket path, host:port)

    @property
    def url(self) -> str: ...

    def alive(self) -> bool: ...

    def ready(self) -> bool: ...

    def exit_cause(self) -> str: ...


R = TypeVar("R", bound=Runtime)


@dataclass
class _Watch(Generic[R]):
    runtime: R               # the process this record is about; another one for the version starts afresh
    failures: int = 0        # restarts in a row that never answered ready
    ready: bool = True       # deploy and restore hand over runtimes that answer
    cause: str = ""          # why it exited, once it has
    retry_at: float | None = None


class Watchdog(Generic[R]):
    """Polls ``watched()``; ``respawn(old)`` starts a replacement at the same address (``None``: the
    version is no longer supervised; ``TargetError``: it could not start, try later); ``note(runtime,
    event, message)`` appends to the version's log. The constructor does no I/O and starts no thread."""

    def __init__(self, watched: Callable[[], Sequence[R]], respawn: Callable[[R], R | None],
                 note: Callable[[R, str, str], None], *, interval: float = 1.0, first_delay: float = 1.0,
                 max_delay: float = 30.0) -> None:
        self._watched = watched
        self._respawn = respawn
        self._note = note
        self.interval = interval
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._watches: dict[tuple[str, int], _Watch[R]] = {}

    def start(self) -> None:
        """Start the thread unless it runs; safe to call from any thread, any number of times."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._stopping,), name="gazelle-watchdog",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for the round it may be in (a restart it began is finished)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def delay(self, failures: int) -> float:
        return min(self.first_delay * 2 ** min(failures, 32), self.max_delay)

    def check(self) -> None:
        """One round: note the runtimes that exited, start again those whose delay has passed."""
        runtimes = self._watched()
        keys = {(r.name, r.version) for r in runtimes}
        for key in self._watches.keys() - keys:
            del self._watches[key]
        for runtime in runtimes:
            key = (runtime.name, runtime.version)
            watch = self._watches.get(key)
            if watch is None or watch.runtime is not runtime:
                watch = self._watches[key] = _Watch(runtime)
            self._check(key, watch)

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.interval):
            try:
                self.check()
            except Exception:
                # A bug in one round must not end supervision of every version: say so loudly, go on.
                log.exception("watchdog round failed; checking again in %g s", self.interval)

    def _check(self, key: tuple[str, int], watch: _Watch[R]) -> None:
        runtime = watch.runtime
        label = f"{runtime.name} v{runtime.version}"
        if runtime.alive():
            if not watch.ready and runtime.ready():
                watch.ready, watch.failures = True, 0
                self._note(runtime, "runtime_ready", f"{label} answers again at {runtime.url}")
            return
        now = time.monotonic()
        if watch.retry_at is None:
            watch.cause = runtime.exit_cause()
            delay = self.delay(watch.failures)
            watch.retry_at = now + delay
            self._note(runtime, "runtime_exited", f"{label} (pid {runtime.pid}) exited without being asked to: "
                                                  f"{watch.cause}; starting it again in {delay:g} s")
            return
        if now < watch.retry_at:
            return
        try:
            fresh = self._respawn(runtime)
        except (TargetError, OSError) as err:   # OSError: its log or run directory cannot be written
            watch.failures += 1
            delay = self.delay(watch.failures)
            watch.retry_at = time.monotonic() + delay   # respawn may have waited for the port
            self._note(runtime, "restart_failed", f"{label} could not be started again: {err}; "
                                                  f"trying again in {delay:g} s")
            return
        if fresh is None:
            del self._watches[key]
            return
        self._watches[key] = _Watch(fresh, failures=watch.failures + 1, ready=False)
        self._note(fresh, "runtime_restarted", f"{label} was restarted at {fresh.address} (pid {fresh.pid}) "
                                               f"after: {watch.cause}")
