"""Prometheus metrics of one runtime: requests by route and status, latency, in-flight, model load time,
and the size of each model call (``gazelle_batch_requests``, ``gazelle_batch_rows``: 1 when nothing was
batched) with the batched calls that had to be redone one request at a time.

Under gunicorn every worker is its own process, so ``/metrics`` must add up all of them: the server
turns on prometheus_client's multiprocess mode (:func:`enable_multiprocess`) with a private directory
before the workers fork, and every worker answers ``/metrics`` by reading the whole directory. In one
process (tests, ``create_app`` embedded elsewhere) the metrics live in a registry private to the app.
Routes are the URL rules (``/v2/models/<name>/infer``), never raw paths, so label values stay few.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from gazelle.procs import pid_alive

ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


_PREFIX = "gazelle-metrics-"


def make_directory() -> str:
    """A private directory for this server's metric files, named after the master's pid.

    A master killed with SIGKILL cannot remove its directory, so each start first removes the
    directories of masters that no longer run.
    """
    for stale in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = stale.name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")


def enable_multiprocess(directory: str) -> None:
    """Make every metric created from now on shared through ``directory``. Call before any fork."""
    os.environ[ENV] = directory
    # prometheus_client picks its value class when it is first imported; this module imports it
    # before the directory exists, so pick again now that the variable is set.
    values.ValueClass = values.get_value_class()


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(ENV))


def worker_exited(pid: int) -> None:
    """Forget a dead worker's live gauges (its in-flight count); its counters keep counting."""
    if multiprocess_enabled():
        prometheus_multiprocess.mark_process_dead(pid)


def remove_directory(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class Metrics:
    """The runtime's metrics. ``observe`` is on every request's path: label children are cached."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_enabled()
        # Metrics are created in a private registry so that two apps in one process never clash.
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("gazelle_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("gazelle_request_duration_seconds", "Time to answer a request, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("gazelle_requests_in_flight", "Requests being answered right now.",
                               registry=self.registry, multiprocess_mode="livesum")
        self.rows = Counter("gazelle_predicted_rows", "Rows predicted (all endpoints).",
                            registry=self.registry)
        self.model_errors = Counter("gazelle_model_errors", "Predictions where the model raised.",
                                    registry=self.registry)
        self.model_load_seconds = Gauge("gazelle_model_load_seconds", "Seconds spent unpickling the model.",
                                        registry=self.registry, multiprocess_mode="max")
        self.model_info = Gauge("gazelle_model_info", "The model this runtime serves (always 1).",
                                ["name", "version", "digest"], registry=self.registry,
                                multiprocess_mode="max")
        self.batch_requests = Histogram("gazelle_batch_requests", "Requests answered by one model call.",
                                        buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("gazelle_batch_rows", "Rows given to the model in one call.",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_fallbacks = Counter("gazelle_batch_fallbacks",
                                       "Batched calls that failed and were redone one request at a time.",
                                       registry=self.registry)
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        histogram = self._latency.get(route)
        if histogram is None:
            histogram = self._latency[route] = self.latency.labels(route)
        histogram.observe(seconds)

    def observe_batch(self, requests: int, rows: int, fell_back: bool) -> None:
        self.batch_requests.observe(requests)
        self.batch_rows.observe(rows)
        if fell_back:
            self.batch_fallbacks.inc()

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
