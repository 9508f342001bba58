"""Model names: DNS-1123 labels, checked before they reach a registry path or a Kubernetes object."""
from __future__ import annotations

import re

from gazelle.errors import InvalidName

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_LENGTH = 40  # leaves room for "-v{version}" suffixes inside Kubernetes' 63-character limit


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidName` saying why."""
    if not isinstance(name, str):
        raise InvalidName(f"model name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidName("model name is empty")
    if len(name) > MAX_LENGTH:
        raise InvalidName(f"model name {name!r} is {len(name)} characters long; the limit is {MAX_LENGTH}")
    # fullmatch: a "$" would also match before a final newline, and "churn\n" would pass.
    if not _LABEL.fullmatch(name):
        raise InvalidName(
            f"model name {name!r} is not a DNS-1123 label",
            hint="use lowercase letters, digits and '-', starting and ending with a letter or digit",
        )
    return name
