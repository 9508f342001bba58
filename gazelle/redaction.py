"""Scrubbing secrets from what Gazelle shows: one rule for URLs, one for lines of text.

A URL keeps its scheme, host, port and path; its user info becomes ``***@`` and every query value
``***`` (registries sign upload URLs in the query). A line of text has each URL in it redacted so,
and bearer tokens, Gazelle tokens (``gz_...``) and any known secret value replaced by ``***``.
Limits: secrets shorter than 4 characters are not searched for (they would blank out ordinary
words); a credential written outside a URL, a bearer header or the known secrets is not recognised.
It imports nothing from the rest of Gazelle, so the runtime, the client and the server can all use it.
"""
from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_GAZELLE_TOKEN = re.compile(r"gz_[A-Za-z0-9_-]{20,}")


def redact_url(url: str) -> str:
    """``http://robot:pw@host:5000/v2/x?_state=S`` -> ``http://***@host:5000/v2/x?_state=***``."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{key}=***" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with its URLs redacted and without bearer tokens, Gazelle tokens or any of ``secrets``."""
    text = _URL.sub(lambda m: redact_url(m.group()), text)
    text = _BEARER.sub(lambda m: m.group(1) + "***", text)
    text = _GAZELLE_TOKEN.sub("***", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
