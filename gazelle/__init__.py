"""Gazelle: from a notebook to a live, shareable model endpoint in one call.

    import gazelle
    ep = gazelle.deploy(model, name="accounts", sample=X_test[:5])
    ep.url, ep.predict(["taxi to conference"])

The client functions are imported on first use, so that a runtime image, which installs only
``gazelle[runtime]``, can ``import gazelle`` without the client's dependencies.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from gazelle.errors import DeployError, GazelleError
from gazelle.lazy import lazy_attributes

__version__ = "0.1.0"

__all__ = [
    "DeployError",
    "Endpoint",
    "GazelleError",
    "configure",
    "delete",
    "deploy",
    "endpoint",
    "list_models",
    "rollback",
    "save",
    "__version__",
]

_LAZY = {
    "save": "gazelle.bundle",
    "deploy": "gazelle.client",
    "endpoint": "gazelle.client",
    "list_models": "gazelle.client",
    "rollback": "gazelle.client",
    "delete": "gazelle.client",
    "configure": "gazelle.client",
    "Endpoint": "gazelle.client",
}

if TYPE_CHECKING:
    from gazelle.bundle import save
    from gazelle.client import Endpoint, configure, delete, deploy, endpoint, list_models, rollback


__getattr__ = lazy_attributes("gazelle", _LAZY, globals())
