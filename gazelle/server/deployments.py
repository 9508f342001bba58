"""What the API's model views ask for, as the store and the job runner see it.

A deploy, a rollback and a delete each become a job the runner performs; a call never waits for one
(the client follows the job). What is decided here, not in the views: a bundle that is already the
live version gets a job born succeeded (nothing is built or restarted); a second request for a
version whose job is still running gets that job, not another; a stored version that is asked for
again takes the settings (public, replicas, resources) of the new request. Limits: it does not
check request input (the views do) and runs nothing itself (the runner does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gazelle.errors import JobNotFound, ModelNotFound, VersionNotFound
from gazelle.names import validate_name
from gazelle.server.jobs import DELETE_STAGES, STAGES, new_job_id, pending_stages
from gazelle.server.state import ServerState
from gazelle.server.store import ACTIVE, JobRow, ModelRow, VersionRow


@dataclass(frozen=True)
class Accepted:
    """A job for a request: ``created`` is False when the request needed no new work."""

    job: JobRow
    version: int | None
    created: bool = True


def model(st: ServerState, name: str) -> ModelRow:
    validate_name(name)
    row = st.store.model(name)
    if row is None:
        raise ModelNotFound(name)
    return row


def version(st: ServerState, name: str, number: int) -> VersionRow:
    row = st.store.version(name, number)
    if row is None:
        raise VersionNotFound(name, number, [v.version for v in st.store.versions(name)])
    return row


def job(st: ServerState, job_id: str) -> JobRow:
    row = st.store.job(job_id)
    if row is None:
        raise JobNotFound(job_id)
    return row


def submit(st: ServerState, name: str, number: int | None, kind: str) -> JobRow:
    """Queue a job of ``kind`` (deploy, rollback, delete) and wake the runner."""
    row = st.store.create_job(new_job_id(), name, number, kind,
                              pending_stages(DELETE_STAGES if kind == "delete" else STAGES))
    st.runner.wake()
    return row


def already_live(st: ServerState, name: str, number: int) -> JobRow:
    """A job that is born succeeded: the version asked for is already the live one."""
    row = st.store.create_job(new_job_id(), name, number, "deploy", pending_stages(STAGES), status="running")
    rec = st.pipeline.recorder(row)
    rec.done("check", f"version {number} holds this bundle")
    for stage in STAGES[1:]:
        rec.skip(stage, f"version {number} is already live")
    rec.succeed()
    return job(st, row.id)


def deploy_bundle(st: ServerState, name: str, digest: str, manifest: dict[str, Any], *, public: bool,
                  replicas: int, resources: dict[str, Any] | None) -> Accepted:
    """Deploy a received bundle: a new version, or the stored version that already holds it."""
    stored, created = st.store.add_version(name, digest, manifest, public=public, replicas=replicas,
                                           resources=resources)
    if created:
        return Accepted(submit(st, name, stored.version, "deploy"), stored.version)
    if stored.public != public:
        st.store.set_public(name, stored.version, public)
        st.routes.invalidate(name)
    if stored.replicas != replicas:
        st.store.update_version(name, stored.version, replicas=replicas)
    if (stored.resources or None) != resources:
        st.store.update_version(name, stored.version, resources=resources)
    return make_live(st, name, stored, "deploy")


def rollback(st: ServerState, name: str, number: int) -> Accepted:
    model(st, name)
    return make_live(st, name, version(st, name, number), "rollback")


def make_live(st: ServerState, name: str, v: VersionRow, kind: str) -> Accepted:
    """Make stored version ``v`` live: nothing if it is, its running job if one runs, else a new job."""
    current = st.store.model(name)
    if current is not None and current.live_version == v.version and v.status == "live":
        return Accepted(already_live(st, name, v.version), v.version, created=False)
    for running in st.store.jobs(model=name, statuses=ACTIVE):
        if running.version == v.version and running.kind != "delete":
            return Accepted(running, v.version)
    if v.status != "deploying":
        st.store.update_version(name, v.version, status="deploying")
    return Accepted(submit(st, name, v.version, kind), v.version)


def delete(st: ServerState, name: str) -> Accepted:
    """Delete ``name`` and its versions: a delete job (the one already running, if there is one)."""
    model(st, name)
    for running in st.store.jobs(model=name, statuses=ACTIVE):
        if running.kind == "delete":
            return Accepted(running, None)
    return Accepted(submit(st, name, None, "delete"), None)
