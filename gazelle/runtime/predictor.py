"""The one thread per worker process that calls the model, batching requests that arrive while it is busy.

Request threads (gunicorn's gthread pool) read, parse and validate their request, then hand the
decoded input to :meth:`Predictor.submit` and wait. The predictor thread takes the oldest waiting
request at once when it is idle (no fixed wait: a lone request is never delayed for company); when
batching is on it also takes every request queued behind it, up to ``max_rows`` rows, joins their
inputs (:func:`gazelle.schema.batching.join`), calls the model once and gives each request its own
slice of the output. Class probabilities are computed for the requests that asked for them only.

A batched call that raises, returns the wrong number of rows, or returns something that is not JSON
is redone one request at a time, so that only the request that breaks the model gets its 500 and
every other request its answer. With batching off the thread takes one request at a time: either
way the model is only ever called from this thread, one call at a time, which keeps models that are
not thread-safe correct.

A request that waits longer than ``timeout`` seconds for its answer gets :class:`ModelTimeout` (504);
``on_timeout`` then runs (under gunicorn it asks the worker to restart, since a model call that never
returns cannot be interrupted). Threads do not survive ``fork``: the thread starts lazily in the
process that first submits, so the master that loaded the model before forking never runs one.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Any, Callable, Sequence

from gazelle.runtime import logs
from gazelle.runtime.errors import ModelFailure, ModelTimeout, describe

Call = Callable[[Any], list[Any]]
Join = Callable[[Sequence[Any]], Any]
Observe = Callable[[int, int, bool], None]


class Job:
    """One request's input, and the answer (or error) the predictor thread leaves for it."""

    __slots__ = ("features", "rows", "proba", "predictions", "probabilities", "error", "cancelled", "_done")

    def __init__(self, features: Any, rows: int, proba: bool) -> None:
        self.features = features
        self.rows = rows
        self.proba = proba
        self.predictions: list[Any] = []
        self.probabilities: list[Any] | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        # A bare lock is the cheapest one-shot signal: held from birth, released when answered.
        self._done = threading.Lock()
        self._done.acquire()

    def finish(self) -> None:
        self._done.release()

    def wait(self, timeout: float) -> bool:
        return self._done.acquire(timeout=timeout)


class Predictor:
    def __init__(self, predict: Call, proba: Call | None, join: Join, *, batch: bool, max_rows: int,
                 timeout: float, observe: Observe | None = None,
                 on_timeout: Callable[[], None] | None = None) -> None:
        self._predict = predict
        self._proba = proba
        self._join = join
        self.batch = batch
        self.max_rows = max_rows
        self.timeout = timeout
        self._observe = observe
        self.on_timeout = on_timeout
        self._pid = -1
        self._start_lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._wake = threading.Condition(threading.Lock())

    def submit(self, features: Any, rows: int, proba: bool) -> tuple[list[Any], list[Any] | None]:
        """(predictions, probabilities or None) for one request's decoded input; raises its ModelFailure."""
        if self._pid != os.getpid():
            self._start()
        job = Job(features, rows, proba)
        with self._wake:
            self._queue.append(job)
            self._wake.notify()
        if not job.wait(self.timeout):
            job.cancelled = True
            if self.on_timeout is not None:
                self.on_timeout()
            raise ModelTimeout(self.timeout)
        if job.error is not None:
            raise job.error
        return job.predictions, job.probabilities

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            # A fresh queue and condition: after a fork the parent's may be in any state.
            self._queue = deque()
            self._wake = threading.Condition(threading.Lock())
            thread = threading.Thread(target=self._loop, name="gazelle-predictor", daemon=True)
            thread.start()
            self._pid = os.getpid()

    def _loop(self) -> None:
        wake, queue = self._wake, self._queue
        while True:
            with wake:
                while not queue:
                    wake.wait()
                jobs = self._take(queue)
            try:
                self.run(jobs)
            except Exception as err:  # the jobs are answered already (run's finally); keep serving
                logs.event("predictor_error", level=logging.ERROR, error=describe(err))

    def _take(self, queue: deque[Job]) -> list[Job]:
        jobs: list[Job] = []
        rows = 0
        while queue:
            job = queue[0]
            if job.cancelled:
                queue.popleft()
                continue
            if jobs and (not self.batch or rows + job.rows > self.max_rows):
                break
            jobs.append(queue.popleft())
            rows += job.rows
        return jobs

    def run(self, jobs: list[Job]) -> None:
        """Answer ``jobs`` (one model call when they are several and batching is on) and wake them."""
        try:
            batched = len(jobs) > 1 and self._run_batch(jobs)
            if not batched:
                for job in jobs:
                    self._run_one(job)
            if self._observe is not None:
                self._observe(len(jobs), sum(job.rows for job in jobs), len(jobs) > 1 and not batched)
        finally:
            for job in jobs:
                job.finish()

    def _run_one(self, job: Job) -> None:
        try:
            job.predictions = self._predict(job.features)
            if job.proba and self._proba is not None:
                job.probabilities = self._proba(job.features)
        except ModelFailure as err:
            job.error = err
        except Exception as err:  # a bug on our side must reach its request, never kill the thread
            job.error = err

    def _run_batch(self, jobs: list[Job]) -> bool:
        """True when one call answered every job; False when they must be run one by one."""
        total = sum(job.rows for job in jobs)
        try:
            predictions = self._predict(self._join([job.features for job in jobs]))
            wanting = [job for job in jobs if job.proba]
            probabilities = None
            if wanting and self._proba is not None:
                probabilities = self._proba(self._join([job.features for job in wanting]))
        except Exception:
            return False
        if len(predictions) != total or (
                probabilities is not None and len(probabilities) != sum(job.rows for job in wanting)):
            return False
        start = 0
        for job in jobs:
            job.predictions = predictions[start:start + job.rows]
            start += job.rows
        if probabilities is not None:
            start = 0
            for job in wanting:
                job.probabilities = probabilities[start:start + job.rows]
                start += job.rows
        return True
