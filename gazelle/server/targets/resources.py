"""A deploy's ``resources``, read once: Kubernetes quantities parsed into numbers, both shapes accepted.

DESIGN section 1 allows Kubernetes' own shape, ``{"requests": {"cpu": "250m", "memory": "512Mi"},
"limits": {"memory": "1Gi"}}``, and the shorthand ``{"cpu": "500m", "memory": "1Gi"}``, which means
those requests plus a memory limit of the same size. ``Resources.of`` turns either into one value;
targets translate it into what their platform understands (the docker target: memory limit and
reservation in bytes, CPUs as nano-CPUs).

Quantities follow Kubernetes' grammar: a decimal number (``1``, ``0.5``, ``1e3``) with an optional
suffix, binary (``Ki Mi Gi Ti Pi Ei``) or decimal (``n u m k M G T P E``). Only ``cpu`` and ``memory``
are understood; any other resource name, a wrong shape or a bad quantity is a ``BadRequest`` naming
the field (``resources.limits.memory: ...``), never a crash in the middle of a deploy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from gazelle.errors import BadRequest

KINDS = ("cpu", "memory")
_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$")
_EXAMPLES = {"cpu": "e.g. 500m or 2", "memory": "e.g. 512Mi or 1Gi"}


def parse_quantity(value: Any, field: str) -> Decimal:
    """``"500m"`` -> 0.5, ``"1Gi"`` -> 1073741824, ``2`` -> 2; BadRequest naming ``field`` otherwise."""
    kind = field.rpartition(".")[2]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRequest(f"{field}: expected a quantity ({_EXAMPLES.get(kind, 'e.g. 1Gi')}), "
                         f"got {type(value).__name__}")
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise BadRequest(f"{field}: {text!r} is not a Kubernetes quantity ({_EXAMPLES.get(kind, 'e.g. 1Gi')})")
    number, exponent, suffix = match.groups()
    try:
        amount = Decimal(number) * (Decimal(f"1{exponent}") if exponent else _SUFFIXES[suffix or ""])
    except InvalidOperation:
        raise BadRequest(f"{field}: {text!r} is not a Kubernetes quantity") from None
    if amount <= 0:
        raise BadRequest(f"{field}: must be more than zero, got {text!r}")
    return amount


@dataclass(frozen=True)
class Resources:
    """Requests and limits as numbers: cpu in CPUs (0.5), memory in bytes (an int)."""

    requests: Mapping[str, Decimal]
    limits: Mapping[str, Decimal]

    @classmethod
    def of(cls, resources: Mapping[str, Any] | None) -> "Resources":
        """Either shape of DESIGN section 1 (or None: nothing asked) -> Resources."""
        if not resources:
            return cls({}, {})
        if not isinstance(resources, Mapping):
            raise BadRequest(f"resources: expected an object such as {{\"memory\": \"1Gi\"}}, "
                             f"got {type(resources).__name__}")
        keys = set(resources)
        if keys & {"requests", "limits"}:
            extra = sorted(keys - {"requests", "limits"})
            if extra:
                raise BadRequest(f"resources.{extra[0]}: not allowed beside requests/limits; "
                                 "valid keys: requests, limits")
            requests = _section(resources.get("requests"), "resources.requests")
            limits = _section(resources.get("limits"), "resources.limits")
            for kind in KINDS:
                if kind in requests and kind in limits and limits[kind] < requests[kind]:
                    raise BadRequest(f"resources.limits.{kind}: less than resources.requests.{kind}; "
                                     "a limit must be at least the request")
            return cls(requests, limits)
        requests = _section(resources, "resources")
        limits = {"memory": requests["memory"]} if "memory" in requests else {}
        return cls(requests, limits)

    @property
    def memory_limit(self) -> int | None:
        """Bytes the version may use at most."""
        value = self.limits.get("memory")
        return int(value) if value is not None else None

    @property
    def memory_request(self) -> int | None:
        value = self.requests.get("memory")
        return int(value) if value is not None else None

    @property
    def cpus(self) -> Decimal | None:
        """The CPUs to allot: the cpu limit, else the cpu request (a platform without requests caps at it)."""
        return self.limits.get("cpu", self.requests.get("cpu"))


def _section(value: Any, field: str) -> dict[str, Decimal]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadRequest(f"{field}: expected an object such as {{\"memory\": \"1Gi\"}}, got {type(value).__name__}")
    parsed: dict[str, Decimal] = {}
    for kind, quantity in value.items():
        if kind not in KINDS:
            raise BadRequest(f"{field}.{kind}: unknown resource; valid resources: {', '.join(KINDS)}")
        amount = parse_quantity(quantity, f"{field}.{kind}")
        if kind == "memory" and amount < 1024 * 1024:
            raise BadRequest(f"{field}.memory: {quantity!r} is less than 1Mi; write e.g. 512Mi")
        parsed[kind] = amount
    return parsed
