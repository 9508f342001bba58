"""``ServerState``: everything the build server's views need, kept on ``app.extensions["gazelle"]``.

Its own module so that the views (``api.py``), the deployments module and the app factory all
import it without importing each other. ``state()`` reads it inside a request or app context only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app

from gazelle.server.auth import Auth
from gazelle.server.events import EventHub, StreamBudget
from gazelle.server.jobs import JobRunner
from gazelle.server.metrics import Metrics
from gazelle.server.pipeline import Pipeline
from gazelle.server.routes import RouteTable
from gazelle.server.runtime_access import TokenPublisher
from gazelle.server.settings import Settings
from gazelle.server.store import Store
from gazelle.server.wiring import Wiring


@dataclass
class ServerState:
    """Everything the views need, kept on ``app.extensions["gazelle"]``."""

    settings: Settings
    store: Store
    auth: Auth
    hub: EventHub
    routes: RouteTable
    wiring: Wiring
    pipeline: Pipeline
    runner: JobRunner
    metrics: Metrics
    bundles_dir: Path
    publisher: TokenPublisher | None = None
    streams: StreamBudget = field(default_factory=lambda: StreamBudget(8))

    def shutdown(self, *, stop_models: bool = False, timeout: float = 5.0) -> None:
        """Stop running jobs; with ``stop_models``, also stop the versions this process runs."""
        self.hub.close()
        self.runner.stop(timeout)
        if self.publisher is not None:
            self.publisher.stop()
        # Only the runner owns the target's processes; other workers just let go of their clients.
        self.wiring.close(requested=stop_models and self.runner.is_runner, grace=self.settings.stop_grace)
        self.store.close()


def state() -> ServerState:
    """The state of the app serving the current request."""
    state: ServerState = current_app.extensions["gazelle"]
    return state
