"""The rows the build server's store reads back: frozen values, one per table, and their decoding.

What a row's columns mean is the store's business (``store.py``); these are what every other part of
the server receives. A stored artifact written by an older server in another format reads as None
(the version is rebuilt on its next deploy).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from gazelle.server.artifacts import Artifact, artifact_from_json


@dataclass(frozen=True)
class ModelRow:
    name: str
    public: bool
    live_version: int | None
    created: float
    updated: float


@dataclass(frozen=True)
class VersionRow:
    model: str
    version: int
    digest: str
    status: str             # deploying | live | ready | failed | retired
    artifact: Artifact | None   # what the build (and push) made: what a target runs
    url: str | None
    manifest: Mapping[str, Any]
    public: bool
    replicas: int
    created: float
    updated: float
    resources: Mapping[str, Any] | None = None   # what deploy(resources=...) asked for


@dataclass(frozen=True)
class JobRow:
    id: str
    seq: int
    model: str
    version: int | None
    kind: str               # deploy | delete
    status: str             # queued | running | succeeded | failed
    stage: str | None
    stages: list[dict[str, Any]]
    error: dict[str, Any] | None
    created: float
    started: float | None
    finished: float | None


@dataclass(frozen=True)
class EventRow:
    id: int
    job_id: str
    kind: str               # stage | log | end
    data: dict[str, Any]
    created: float


@dataclass(frozen=True)
class TokenRow:
    id: int
    name: str
    scope: str
    created: float
    last_used: float | None = None


def model_row(row: Any) -> ModelRow:
    return ModelRow(row.name, bool(row.public), row.live_version, row.created, row.updated)


def _artifact(text: str | None) -> Artifact | None:
    """The stored artifact (JSON in the ``ref`` column); None for a version never built."""
    if not text:
        return None
    try:
        return artifact_from_json(json.loads(text))
    except (ValueError, KeyError, TypeError):
        return None   # written by an older server in another format: it is rebuilt on its next deploy


def version_row(row: Any) -> VersionRow:
    return VersionRow(row.model, row.version, row.digest, row.status, _artifact(row.ref), row.url,
                      json.loads(row.manifest), bool(row.public), row.replicas, row.created, row.updated,
                      json.loads(row.resources) if row.resources else None)


def token_row(row: Any) -> TokenRow:
    return TokenRow(row.id, row.name, row.scope, row.created, row.last_used)


def job_row(row: Any) -> JobRow:
    return JobRow(row.id, row.seq, row.model, row.version, row.kind, row.status, row.stage,
                  json.loads(row.stages), json.loads(row.error) if row.error else None,
                  row.created, row.started, row.finished)
