"""The notebook side of Gazelle: ``deploy()`` a model, get an ``Endpoint``, manage models by name.

Needs ``gazelle[client]`` (httpx); ``gazelle[notebook]`` adds ipywidgets for the progress widget.
Every call takes ``server=`` and ``token=``; see ``gazelle.client.config`` for the defaults.
"""
from __future__ import annotations

from gazelle.client.config import configure
from gazelle.client.deployment import deploy
from gazelle.client.endpoints import Endpoint, delete, endpoint, list_models, rollback

__all__ = ["Endpoint", "configure", "delete", "deploy", "endpoint", "list_models", "rollback"]
