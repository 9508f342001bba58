"""Prometheus metrics of the build server (``GET /metrics``).

Request counts and latencies are per server process (with ``--workers`` > 1 each worker reports its
own; scrape through one address and they are sampled, not summed). Model and job counts are read from
the store at scrape time, so they are the same whichever process answers.
"""
from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gazelle.server.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StoreCollector(Collector):
    def __init__(self, store: Store, runs_jobs: Callable[[], bool]) -> None:
        self.store = store
        self.runs_jobs = runs_jobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        models = self.store.models()
        yield GaugeMetricFamily("gazelle_models", "Models known to the server", value=len(models))
        yield GaugeMetricFamily("gazelle_models_live", "Models with a live version",
                                value=sum(1 for m in models if m.live_version is not None))
        jobs = GaugeMetricFamily("gazelle_jobs", "Jobs by status", labels=["status"])
        for status, count in sorted(self.store.job_counts().items()):
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily("gazelle_server_runs_jobs", "1 if this server process runs the jobs",
                                value=1 if self.runs_jobs() else 0)


class Metrics:
    def __init__(self, store: Store, runs_jobs: Callable[[], bool]) -> None:
        # A registry per app: tests create many apps in one process.
        self.registry = CollectorRegistry()
        self.requests = Counter("gazelle_server_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("gazelle_server_request_seconds", "Time to the start of the answer",
                                 ["route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.registry.register(_StoreCollector(store, runs_jobs))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
