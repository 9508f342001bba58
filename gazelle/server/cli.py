"""``gazelle server``: the build server under gunicorn (``serve(args)``).

One worker process with many threads by default (``gthread``: each open event stream holds a thread).
With ``--workers`` > 1 every worker serves the API and the gateway from the shared store, and exactly
one of them, the holder of ``{data_dir}/runner.lock``, runs the jobs and owns the runtime processes
(``jobs.JobRunner``); if it dies, another worker takes over. With PostgreSQL and a docker or
kubernetes target, every worker of every replica claims jobs in the database instead (``jobs``).

Before the workers start, the master migrates the schema (``migrations``) and creates the admin token, so workers never race
for them, and checks the configuration, so a bad setting fails with one line instead of a worker loop.
A clean exit (Ctrl-C, SIGTERM) stops the model versions the server runs; a killed server leaves them
running, and the next start adopts them.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any

from gunicorn.app.base import BaseApplication

from gazelle.server import front as front_module, wiring
from gazelle.server.auth import Auth
from gazelle.server.front import Front
from gazelle.server.settings import Settings
from gazelle.server.store import Store

log = logging.getLogger("gazelle.server")


def configure_logging(level: int = logging.INFO) -> None:
    """Log lines of the ``gazelle`` loggers on stderr; the root logger is left alone."""
    logger = logging.getLogger("gazelle")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def prepare(settings: Settings) -> None:
    """Check the configuration, create the tables and the admin token (once, before any worker)."""
    for warning in wiring.build(settings).warnings():
        log.warning("%s", warning)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = Store(settings.db_url)
    try:
        store.create_schema()
        auth = Auth(store)
        auth.ensure_admin(settings.token_path, settings.admin_token)
    finally:
        store.close()


class GazelleServer(BaseApplication):
    def __init__(self, settings: Settings, boot_time: float, front: Front | None = None) -> None:
        self.settings = settings
        self.boot_time = boot_time
        self.front = front
        super().__init__()

    def load_config(self) -> None:
        from gazelle.server.worker import GatewayWorker, Limits

        s = self.settings
        # Behind the front, every connection is nginx's, which bounds connections per client itself.
        GatewayWorker.limits = Limits(header_timeout=s.header_timeout, body_timeout=s.body_timeout,
                                      per_client=0 if self.front else s.max_client_connections)
        host = f"[{s.host}]" if ":" in s.host else s.host
        options: dict[str, Any] = {
            "bind": f"unix:{self.front.server_socket}" if self.front else f"{host}:{s.port}",
            "workers": s.workers,
            "worker_class": "gazelle.server.worker.GatewayWorker",
            "threads": s.threads,
            "timeout": 60,
            # A worker's exit stops the model versions it runs, each with its own grace.
            "graceful_timeout": int(s.stop_grace) + 20,
            "keepalive": 5,
            "proc_name": "gazelle-server",
            "errorlog": "-",
            "accesslog": None,
            "loglevel": "info",
            "control_socket_disable": True,
            "when_ready": self._ready,
            "post_worker_init": _post_worker_init,
            "worker_exit": _worker_exit,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from gazelle.server.app import create_app

        return create_app(self.settings, boot_time=self.boot_time)

    def _ready(self, server: Any) -> None:
        behind = "  (nginx in front)" if self.front else ""
        token = "GAZELLE_ADMIN_TOKEN" if self.settings.admin_token else self.settings.token_path
        print(f"Gazelle server at {self.settings.base_url}  (admin token: {token}){behind}", flush=True)


def _state_of(worker: Any) -> Any:
    app = getattr(worker, "wsgi", None)
    return getattr(app, "extensions", {}).get("gazelle") if app is not None else None


def _post_worker_init(worker: Any) -> None:
    """Every stop of a worker is graceful, and ends the open event streams first.

    gunicorn's own quick-exit handler (SIGINT, SIGQUIT) can deadlock a gthread worker when a second
    signal arrives while the first is being handled, which Ctrl-C causes (SIGINT reaches the worker
    and the master, which then sends SIGQUIT): the worker would hang until SIGKILLed, leaving the
    model processes it owns behind. So the worker ignores SIGINT (the master turns it into SIGQUIT)
    and treats SIGQUIT like SIGTERM: stop accepting, finish what is in flight, run ``worker_exit``.
    """
    state = _state_of(worker)

    def graceful(signum: int, frame: Any) -> None:
        if state is not None:
            state.hub.close()   # gunicorn waits for every open connection, event streams included
        worker.handle_exit(signum, frame)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGQUIT, graceful)


def _worker_exit(server: Any, worker: Any) -> None:
    """A requested stop stops the models too; a worker whose master died leaves them running.

    gunicorn's worker notices a dead master ("Parent changed, shutting down") and exits through this
    same hook. The server was killed, not stopped: the runtimes keep serving and the next start adopts
    them, exactly as when the whole process group is killed.
    """
    state = _state_of(worker)
    if state is not None:
        orphaned = os.getppid() != worker.ppid
        if orphaned:
            log.warning("the server's master process is gone: leaving the model versions running for "
                        "the next start to adopt")
        state.shutdown(stop_models=not orphaned)


def serve(args: argparse.Namespace) -> int:
    """``gazelle server [--host] [--port] [--data-dir] [--workers] [--target] [--builder] [--registry]``."""
    configure_logging()
    settings = Settings.from_args(args)
    boot_time = time.time()
    settings = settings.replace(front=front_module.resolve(settings.front, settings.target))
    prepare(settings)
    log.info("starting with %r", settings)
    front = None
    if settings.front == "nginx":
        front_module.probe_port_free(settings.host, settings.port)
        front = Front(front_module.front_listen(settings), settings.data_dir)
        front.start()
    try:
        GazelleServer(settings, boot_time, front).run()
    finally:   # the master's exit (gunicorn ends it with SystemExit); a worker's is a no-op (Front.stop)
        if front is not None:
            front.stop()
    return 0
