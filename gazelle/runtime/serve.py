"""``gazelle runtime BUNDLE``: serve one bundle under gunicorn, on TCP or a unix socket (:mod:`.bind`).

The master process reads the bundle, checks the environment and unpickles the model ONCE, before
gunicorn forks its workers (``preload_app``), so the workers share the model's memory and a model that
cannot load never reaches gunicorn's restart loop. Exit statuses:

    0  stopped (SIGTERM/SIGINT: in-flight requests finish within GAZELLE_RUNTIME_GRACEFUL_TIMEOUT)
    2  the bundle cannot be read, or a setting is invalid
    3  the environment differs from the bundle's (strict check); every difference is logged
    4  the model failed to load; the log line has ``"error": "<ExcType>: <message>"`` and the traceback
  143  SIGTERM before the model was served (while it loads): stopped at once, with the status of a
       process the signal killed. A container's PID 1 would otherwise ignore it until the engine or
       the kubelet kills it after its grace period.

Workers are gunicorn's gthread workers with HTTP keep-alive (:mod:`.worker`, which spreads kept-alive
connections evenly over the workers): ``GAZELLE_RUNTIME_THREADS`` request threads each read,
validate and answer requests, and one predictor thread per worker calls the model
(:mod:`gazelle.runtime.predictor`), batching the requests that queue while it is busy. The model so
never sees two threads at once, and ``--workers`` still sets how many model calls run in parallel.
A request that waits longer than ``GAZELLE_RUNTIME_TIMEOUT`` gets a JSON 504 and its worker restarts
(gracefully: the other requests it holds finish). On SIGTERM the workers stop accepting and finish
every request they hold, queued ones included, within ``GAZELLE_RUNTIME_GRACEFUL_TIMEOUT``.
Metrics add up across workers through a private prometheus_client multiprocess
directory, created before the fork and removed when the master exits. Logs are JSON lines on stderr,
gunicorn's own included.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from gazelle.errors import BundleError, ConfigError, EnvironmentMismatch
from gazelle.runtime import bind, logs, metrics
from gazelle.runtime.errors import ModelLoadFailed
from gazelle.runtime.settings import RuntimeSettings
from gazelle.runtime.worker import ConnectionTable

EXIT_UNREADABLE = 2
EXIT_ENVIRONMENT = 3
EXIT_MODEL_LOAD = 4
EXIT_STOPPED_LOADING = 128 + int(signal.SIGTERM)
SOCKET_UMASK = 0o177
KEEPALIVE_SECONDS = 5
WORKER_CLASS = "gazelle.runtime.worker.BalancedThreadWorker"
# gthread workers report to the arbiter from their event loop, which a slow model call does not
# block; gunicorn's own timeout only catches a wedged loop, so it gets slack beyond the request's.
HEARTBEAT_SLACK_SECONDS = 30


class _Stopped(BaseException):
    """SIGTERM before gunicorn took the signals over (it installs its own when it starts)."""


def _stop_loading(signum: int, frame: Any) -> None:
    raise _Stopped()


def _restart_this_worker() -> None:
    """A model call that outlived the timeout cannot be interrupted: let gunicorn replace the worker."""
    os.kill(os.getpid(), signal.SIGTERM)


class JsonGunicornLogger(glogging.Logger):
    """gunicorn's error log as JSON lines; its access log stays off (the app writes its own)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.JsonFormatter())


class RuntimeServer(BaseApplication):
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


def main(args: argparse.Namespace) -> int:
    logs.configure()
    try:
        settings = RuntimeSettings.from_env()
        listen = bind.resolve(args.bundle, host=args.host, port=args.port, socket=args.socket,
                              workers=args.workers)
    except ConfigError as err:
        logs.event("invalid_setting", level=logging.ERROR, error=str(err))
        return EXIT_UNREADABLE
    master = os.getpid()
    signal.signal(signal.SIGTERM, _stop_loading)
    metrics_dir = metrics.make_directory()
    metrics.enable_multiprocess(metrics_dir)
    try:
        return _serve(listen, settings, metrics_dir)
    except _Stopped:
        logs.event("stopped", level=logging.WARNING, reason="SIGTERM before the model was served")
        return EXIT_STOPPED_LOADING
    finally:
        # Forked workers unwind through here too when they exit; only the master owns the directory.
        if os.getpid() == master:
            metrics.remove_directory(metrics_dir)


def _serve(listen: bind.Listen, settings: RuntimeSettings, metrics_dir: str) -> int:
    # Imported after the multiprocess directory is set, so that every metric the app creates uses it.
    from gazelle.runtime import loader
    from gazelle.runtime.app import build_app

    try:
        bundle = loader.read(listen.bundle)
    except (OSError, BundleError) as err:
        logs.event("bundle_unreadable", level=logging.ERROR, bundle=str(listen.bundle),
                   error=f"{type(err).__name__}: {err}")
        return EXIT_UNREADABLE
    try:
        loaded = loader.load(bundle, settings.env_check)
        app = build_app(loaded, settings)
    except EnvironmentMismatch as err:
        logs.event("environment_mismatch", level=logging.ERROR, model=bundle.name,
                   differences=err.differences, message=str(err))
        return EXIT_ENVIRONMENT
    except ModelLoadFailed as err:
        logs.event("model_load_failed", level=logging.ERROR, model=bundle.name, error=err.error,
                   traceback=err.detail)
        return EXIT_MODEL_LOAD
    app.extensions["gazelle.runtime"].predictor.on_timeout = _restart_this_worker
    logs.event("starting", model=bundle.name, version=settings.model_version, digest=bundle.digest,
               bind=listen.address, workers=listen.workers, worker_class=WORKER_CLASS,
               threads=settings.threads, batch=app.extensions["gazelle.runtime"].batch,
               max_batch=settings.max_batch, metrics_dir=metrics_dir)

    def when_ready(arbiter: Any) -> None:
        logs.event("ready", model=bundle.name, url=listen.url)

    # Room for every worker, and for their replacements while the old ones finish.
    connections = ConnectionTable(2 * listen.workers + 2)

    def pre_fork(arbiter: Any, worker: Any) -> None:
        worker.table, worker.slot = connections, connections.claim(worker.age)

    def child_exit(arbiter: Any, worker: Any) -> None:
        connections.release(worker.age)
        metrics.worker_exited(worker.pid)

    def on_exit(arbiter: Any) -> None:
        metrics.remove_directory(metrics_dir)

    # The model and everything loaded so far is shared with the workers: keep the collector from
    # scanning (and so copying) those pages in every worker.
    gc.freeze()
    RuntimeServer(app, {
        "bind": [listen.address],
        # Applied while gunicorn binds: a unix socket comes out 0600, whatever the caller's umask.
        "umask": SOCKET_UMASK,
        "workers": listen.workers,
        "worker_class": WORKER_CLASS,
        "threads": settings.threads,
        "keepalive": KEEPALIVE_SECONDS,
        "reuse_port": settings.reuse_port,
        "preload_app": True,
        "timeout": settings.timeout + HEARTBEAT_SLACK_SECONDS,
        "graceful_timeout": settings.graceful_timeout,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "logger_class": JsonGunicornLogger,
        # gunicorn's control socket defaults to one path per user: two runtimes would fight over it.
        "control_socket_disable": True,
        "proc_name": f"gazelle-runtime-{bundle.name}",
        "when_ready": when_ready,
        "pre_fork": pre_fork,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }).run()
    return 0

