"""The one spelling of true and false that every Gazelle setting and query parameter accepts.

``1 true yes on`` and ``0 false no off``, in any case, around any whitespace. The caller decides
what absence means (``query_flag``: an empty query parameter is true) and raises its own error,
naming the field, for anything else.
It imports nothing from the rest of Gazelle, so the runtime can use it as the server does.
"""
from __future__ import annotations

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse_bool(raw: str) -> bool | None:
    """True or False for one of the spellings above; None for anything else."""
    lowered = raw.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    return None


def query_flag(raw: str | None, absent: bool = False) -> bool | None:
    """A query parameter as a flag: ``absent`` when it is missing, True when empty (``?proba``)."""
    if raw is None:
        return absent
    return parse_bool(raw) if raw.strip() else True
