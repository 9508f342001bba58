"""``gazelle runtime BUNDLE``: serve one bundle under gunicorn, on TCP or a unix socket (:mod:`.bind`).

The master process reads the bundle, checks the environment and unpickles the model ONCE, before
gunicorn forks its workers (``preload_app``), so the workers share the model's memory and a model that
cannot load never reaches gunicorn's restart loop. Exit statuses:

    0  stopped (SIGTERM/SIGINT: in-flight requests finish within GAZELLE_RUNTIME_GRACEFUL_TIMEOUT)
    2  the bundle cannot be read, or a setting is invalid
    3  the environment differs from the bundle's (strict check); every difference is logged
    4  the model failed to load; the log line has ``"error": "<ExcType>: <message>"`` and the traceback

Workers are gunicorn's sync workers: a prediction is CPU work under the GIL, so one request per
process at a time is the most predictable choice, the model never sees two threads, and the request
path is exactly that of a plain Flask app under gunicorn; ``--workers`` sets the parallelism.
``GAZELLE_RUNTIME_THREADS=N`` (N > 1) switches to gthread workers with N threads each and HTTP
keep-alive, for thread-safe models that release the GIL or wait on I/O. Metrics add up across workers through a private prometheus_client multiprocess
directory, created before the fork and removed when the master exits. Logs are JSON lines on stderr,
gunicorn's own included.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from gazelle.errors import BundleError, ConfigError, EnvironmentMismatch
from gazelle.runtime import bind, logs, metrics
from gazelle.runtime.errors import ModelLoadFailed
from gazelle.runtime.settings import RuntimeSettings

EXIT_UNREADABLE = 2
EXIT_ENVIRONMENT = 3
EXIT_MODEL_LOAD = 4
SOCKET_UMASK = 0o177
KEEPALIVE_SECONDS = 5  # gthread only: sync workers close every connection


def worker_class(threads: int) -> str:
    return "gthread" if threads > 1 else "sync"


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
    metrics_dir = metrics.make_directory()
    metrics.enable_multiprocess(metrics_dir)
    try:
        return _serve(listen, settings, metrics_dir)
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
    kind = worker_class(settings.threads)
    logs.event("starting", model=bundle.name, version=settings.model_version, digest=bundle.digest,
               bind=listen.address, workers=listen.workers, worker_class=kind, threads=settings.threads,
               metrics_dir=metrics_dir)

    def when_ready(arbiter: Any) -> None:
        logs.event("ready", model=bundle.name, url=listen.url)

    def child_exit(arbiter: Any, worker: Any) -> None:
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
        "worker_class": kind,
        "threads": settings.threads,
        "keepalive": KEEPALIVE_SECONDS,
        "reuse_port": settings.reuse_port,
        "preload_app": True,
        "timeout": settings.timeout,
        "graceful_timeout": settings.graceful_timeout,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "logger_class": JsonGunicornLogger,
        # gunicorn's control socket defaults to one path per user: two runtimes would fight over it.
        "control_socket_disable": True,
        "proc_name": f"gazelle-runtime-{bundle.name}",
        "when_ready": when_ready,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }).run()
    return 0

