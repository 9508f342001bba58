"""Compute resources of a model version: ``deploy(resources=...)`` in either shape of DESIGN section 1.

Kubernetes' own ``{"requests": {...}, "limits": {...}}``, or the shorthand ``{"cpu": "500m", "memory":
"1Gi"}`` (the requests, and the memory limit), merged over the defaults (512Mi and 100m requested, a 1Gi
memory limit). Checked where the API receives them, so a mistake is a 400 naming the field before any
job starts, and again by the target that applies them. Quantities are Kubernetes' (``250m``, ``1``,
``512Mi``, ``2Gi``); resource names are ``cpu``, ``memory``, ``ephemeral-storage`` or an extended
resource with a domain (``nvidia.com/gpu``). Pure functions, no I/O.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from gazelle.errors import BadRequest

DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "100m", "memory": "512Mi"},
    "limits": {"memory": "1Gi"},
}
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


def parse(spec: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """``deploy(resources=...)`` in either shape of DESIGN section 1, checked, over the defaults.

    Kubernetes' own ``{"requests": {...}, "limits": {...}}``, or the shorthand ``{"cpu": "500m",
    "memory": "1Gi"}`` (the requests, and the memory limit). BadRequest names the offending field.
    """
    if spec is None:
        return {kind: dict(values) for kind, values in DEFAULT_RESOURCES.items()}
    if not isinstance(spec, Mapping):
        raise BadRequest(f"resources: expected an object, got {type(spec).__name__}")
    if set(spec) <= {"requests", "limits"} and spec:
        given = {kind: _quantities(f"resources.{kind}", spec.get(kind) or {}) for kind in ("requests", "limits")}
    else:
        shorthand = _quantities("resources", spec)
        given = {"requests": shorthand,
                 "limits": {"memory": shorthand["memory"]} if "memory" in shorthand else {}}
    out = {kind: {**DEFAULT_RESOURCES[kind], **given[kind]} for kind in ("requests", "limits")}
    for name, request in out["requests"].items():
        limit = out["limits"].get(name)
        # A request above the default limit raises the limit with it, rather than being refused.
        if limit is not None and name not in given["limits"] and _amount(request) > _amount(limit):
            out["limits"][name] = request
    for name, ceiling in out["limits"].items():
        wanted = out["requests"].get(name)
        if wanted is not None and _amount(wanted) > _amount(ceiling):
            raise BadRequest(f"resources.requests.{name}: {wanted} is more than the limit {ceiling}")
    return out


def _quantities(path: str, values: Any) -> dict[str, str]:
    if not isinstance(values, Mapping):
        raise BadRequest(f"{path}: expected an object like {{\"cpu\": \"250m\", \"memory\": \"512Mi\"}}, "
                         f"got {type(values).__name__}")
    out: dict[str, str] = {}
    for name, value in values.items():
        if name not in _RESOURCE_NAMES and "/" not in str(name):
            raise BadRequest(f"{path}.{name}: unknown resource; valid: {', '.join(_RESOURCE_NAMES)} "
                             f"or an extended resource such as nvidia.com/gpu")
        text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _QUANTITY.match(text):
            raise BadRequest(f"{path}.{name}: {value!r} is not a Kubernetes quantity (e.g. 250m, 1, 512Mi, 2Gi)")
        out[str(name)] = text
    return out


_SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def _amount(quantity: str) -> float:
    match = _QUANTITY.match(quantity)
    suffix = (match.group(2) if match else None) or ""
    return float(quantity[:len(quantity) - len(suffix)]) * _SUFFIX[suffix]
