"""Following a job of the build server (a deploy, rollback or delete) to its end.

Progress comes as server-sent events. A stream that breaks off is reopened with ``Last-Event-ID``
(events already seen are skipped, should the server replay them); if no stream can be had, the job
is polled with ``GET /jobs/{id}``, which gives stages but no log lines.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from gazelle.client.http import Client, Event
from gazelle.client.progress import STAGES, NoProgress, Progress
from gazelle.errors import DeployError, GazelleError

JOB_TIMEOUT = 3600.0        # the server fails its own stuck stages long before this
POLL_INTERVAL = 0.5
STREAM_RETRIES = 3


def failure(job: Mapping[str, Any], job_id: str, logs: Sequence[str] = ()) -> DeployError:
    """The DeployError a failed job stands for."""
    error = job.get("error") or {}
    stage = str(error.get("stage") or job.get("stage") or "unknown")
    cause = str(error.get("message") or f"the job ended as {job.get('status')!r} without saying why")
    return DeployError(stage, cause, logs=list(error.get("logs") or logs), job=job_id)


def follow(client: Client, job_id: str, progress: Progress | None = None) -> dict[str, Any]:
    """Follow job ``job_id`` to its end and return the final job JSON; progress is fed on the way."""
    shown = progress or NoProgress()
    deadline = time.monotonic() + JOB_TIMEOUT
    seen_ids: set[str] = set()
    last_id: str | None = None
    seen_plain = 0          # events without an id already handled: a replay repeats them first
    failures = 0
    while failures < STREAM_RETRIES:
        try:
            position = 0
            for event in client.events(f"/jobs/{job_id}/events", last_event_id=last_id):
                if event.id is not None:
                    if event.id in seen_ids:
                        continue
                    seen_ids.add(event.id)
                    last_id = event.id
                else:
                    position += 1
                    if position <= seen_plain:
                        continue
                    seen_plain = position
                failures = 0
                if event.event == "end" and isinstance(event.data, Mapping):
                    return dict(event.data)
                _show(event, shown)
        except GazelleError as err:
            status = getattr(err, "status", None)
            if status in (401, 403):
                raise
            if status is not None:
                break       # an error answer, not a broken stream: poll, which says what is wrong
        failures += 1
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_INTERVAL * failures)
    return poll(client, job_id, shown, deadline=deadline)


def _show(event: Event, progress: Progress) -> None:
    data = event.data if isinstance(event.data, Mapping) else {}
    if event.event == "stage":
        progress.stage(str(data.get("stage", "")), str(data.get("status", "")), str(data.get("message") or ""))
    elif event.event == "log":
        progress.log(str(data.get("stage", "")), str(data.get("line", "")))


def poll(client: Client, job_id: str, progress: Progress, *, deadline: float) -> dict[str, Any]:
    """Follow the job by ``GET /jobs/{id}`` until it ends (no log lines this way, only stages)."""
    while True:
        job = client.api("GET", f"/jobs/{job_id}")
        for stage in job.get("stages") or []:
            if stage.get("name") in STAGES and stage.get("status") != "pending":
                progress.stage(stage["name"], stage["status"], "")
        if job.get("status") in ("succeeded", "failed"):
            return dict(job)
        if time.monotonic() > deadline:
            raise GazelleError(f"job {job_id} has not finished after {JOB_TIMEOUT:.0f}s",
                               hint=f"see GET /api/v1/jobs/{job_id} on {client.server}")
        time.sleep(POLL_INTERVAL)
