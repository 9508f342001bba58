"""The build server: ``create_app(settings)`` (API, gateway, job runner) and ``gazelle server``.

Modules: ``settings`` (``GAZELLE_*``), ``wiring`` (builder/registry/target from settings), ``store``
(SQL state), ``auth`` (tokens), ``api`` (``/api/v1``), ``jobs`` and ``pipeline`` (the deploy stages),
``events`` (SSE), ``routes`` (what the gateway resolves), ``gateway``, ``cli`` (gunicorn).
``create_app`` is imported on first use, so ``gazelle.server.targets`` and ``builders`` stay light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app", "Settings"]

if TYPE_CHECKING:
    from gazelle.server.app import create_app
    from gazelle.server.settings import Settings


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from gazelle.server.app import create_app

        return create_app
    if name == "Settings":
        from gazelle.server.settings import Settings

        return Settings
    raise AttributeError(f"module 'gazelle.server' has no attribute {name!r}")
