"""The model server: one bundle behind a Flask app under gunicorn.

    from gazelle.runtime import create_app
    app = create_app("accounts.tar")            # environment check, unpickle, routes
    gazelle runtime accounts.tar --port 8080     # the same under gunicorn (gazelle.runtime.serve)

It loads a bundle (environment check first, then unpickle), validates rows against the bundle's
schema, and answers ``/predict``, the Open Inference Protocol v2, ``/metadata``, ``/openapi.json``,
``/metrics`` and the try-it page. It imports nothing from ``gazelle.client`` or ``gazelle.server``, and
only the runtime extra's packages. Load only bundles you trust: unpickling runs the bundle's code.
Names are imported on first use so that ``gazelle.runtime.serve`` can prepare the process (metrics
directory) before Flask and prometheus_client load.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from gazelle.lazy import lazy_attributes

__all__ = ["RuntimeSettings", "create_app"]

_LAZY = {"create_app": "gazelle.runtime.app", "RuntimeSettings": "gazelle.runtime.settings"}

if TYPE_CHECKING:
    from gazelle.runtime.app import create_app
    from gazelle.runtime.settings import RuntimeSettings


__getattr__ = lazy_attributes("gazelle.runtime", _LAZY, globals())
