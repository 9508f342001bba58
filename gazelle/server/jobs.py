"""Jobs: what a deploy, rollback or delete records, and the runner that executes them in the background.

A job is a row in the store plus its events. ``JobRecorder`` is the only writer of both: stage
transitions and log lines go to the job row and to ``job_events`` (which the SSE streams replay and
follow). ``JobRunner`` runs queued jobs on threads of this process: one job at a time per model, in the
order they were queued; different models run in parallel.

The store is the queue. Any server process may queue a job. Who runs them depends on the store:

- one machine (SQLite, or the local target, which owns processes on this host): only the process
  holding the runner lock (``{data_dir}/runner.lock``) runs them. Others keep trying to take the lock,
  so when the runner's process dies another one takes over; on taking the lock, the runner first fails
  the jobs that a dead runner left behind (``recover``).
- several replicas (PostgreSQL and a docker or kubernetes target): every replica runs a runner. A job
  is claimed in the database (``Store.claim_job``: ``FOR UPDATE SKIP LOCKED``, and a partial unique
  index lets at most one job per model run) with a lease, owner id and expiry, that the runner's
  heartbeat renews every third of ``lease`` seconds. A running job whose lease ran out belonged to a
  replica that stopped: the first replica to take the lease over fails it with ``REPLICA_STOPPED``.
  A replica that finds its own lease gone (it was paused past the expiry and another took over)
  stops working on the job at its next stage or log line (``LeaseLost``), and writes nothing more.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence

from gazelle.redaction import redact
from gazelle.server.events import EventHub
from gazelle.server.store import ACTIVE, JobRow, Store
from gazelle.server.urls import ModelUrls

log = logging.getLogger("gazelle.server")

STAGES = ("check", "build", "push", "deploy", "sanity", "live")
DELETE_STAGES = ("delete",)
RESTART_MESSAGE = "the server stopped while this job was running (restart)"
REPLICA_STOPPED = "the replica running this job stopped"
ERROR_LOG_LINES = 20


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def pending_stages(names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"name": n, "status": "pending", "started": None, "finished": None, "message": None} for n in names]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_json(job: JobRow, urls: ModelUrls) -> dict[str, Any]:
    """The job as the API shows it (DESIGN: "Job JSON"); ``url`` is the model's (``gazelle.server.urls``)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "model": job.model,
        "version": job.version,
        "status": job.status,
        "stage": job.stage,
        "stages": [{**s, "started": iso(s.get("started")), "finished": iso(s.get("finished"))}
                   for s in job.stages],
        "error": job.error,
        **urls.of_model(job.model),
        "created": iso(job.created),
        "started": iso(job.started),
        "finished": iso(job.finished),
    }


class LeaseLost(BaseException):
    """This replica's lease on a job is gone: another replica owns the job now.

    A ``BaseException`` so that no stage's ``except Exception`` turns it into a failure to record:
    the job is no longer ours to write.
    """


class JobRecorder:
    """Writes one job's progress: its row (status, stage, stages, error) and its events."""

    def __init__(self, store: Store, hub: EventHub, job: JobRow, urls: ModelUrls,
                 secrets: Iterable[str] = (), lost: Callable[[str], bool] = lambda job_id: False) -> None:
        self.store = store
        self.lost = lost
        self.hub = hub
        self.job_id = job.id
        self.model = job.model
        self.urls = urls
        self.secrets = tuple(s for s in secrets if s)
        self.stages = [dict(s) for s in job.stages]
        self.stage: str | None = job.stage
        self.recent: list[str] = []          # the current stage's last log lines, for the error
        self._lock = threading.Lock()        # builders may log from helper threads

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        self._check_lease()
        self.store.add_event(self.job_id, kind, data)
        self.hub.notify()

    def _check_lease(self) -> None:
        if self.lost(self.job_id):
            raise LeaseLost(self.job_id)

    def _set_stage(self, name: str, status: str, message: str | None) -> None:
        self._check_lease()
        now = time.time()
        message = redact(message, self.secrets) if message else message
        for s in self.stages:
            if s["name"] == name:
                s["status"] = status
                if status == "running":
                    s["started"] = now
                elif status in ("done", "failed", "skipped"):
                    s["started"] = s["started"] or now
                    s["finished"] = now
                s["message"] = message
        self.stage = name
        self.store.update_job(self.job_id, stage=name, stages=self.stages)
        self._event("stage", {"stage": name, "status": status, "message": message or ""})

    def status_of(self, name: str) -> str | None:
        with self._lock:
            return next((s["status"] for s in self.stages if s["name"] == name), None)

    def start(self, name: str, message: str | None = None) -> None:
        with self._lock:
            self.recent = []
            self._set_stage(name, "running", message)

    def done(self, name: str, message: str | None = None) -> None:
        with self._lock:
            self._set_stage(name, "done", message)

    def skip(self, name: str, message: str) -> None:
        with self._lock:
            self._set_stage(name, "skipped", message)

    def log(self, line: str) -> None:
        """One progress line of the current stage (a ``Log`` for builders and targets)."""
        clean = redact(str(line).rstrip("\n"), self.secrets)
        with self._lock:
            self.recent = (self.recent + [clean])[-ERROR_LOG_LINES:]
            self._event("log", {"stage": self.stage, "line": clean})

    def fail(self, name: str, message: str, logs: Sequence[str] = ()) -> None:
        """The job failed at stage ``name``; ``logs`` (else the stage's recent lines) explain why."""
        message = redact(message, self.secrets)
        lines = [redact(line, self.secrets) for line in (list(logs) or self.recent)][-ERROR_LOG_LINES:]
        with self._lock:
            self._check_lease()
            self._set_stage(name, "failed", message)
            error = {"stage": name, "message": message, "logs": lines}
            self.store.update_job(self.job_id, status="failed", error=error, finished=time.time())
            self._end()

    def succeed(self) -> None:
        with self._lock:
            self._check_lease()
            self.store.update_job(self.job_id, status="succeeded", finished=time.time())
            self._end()

    def _end(self) -> None:
        job = self.store.job(self.job_id)
        assert job is not None
        self._event("end", job_json(job, self.urls))
        outcome = job.status if job.error is None else f"failed at {job.error['stage']}: {job.error['message']}"
        log.info("job %s (%s %s v%s) %s", job.id, job.kind, job.model, job.version, outcome)


class JobRunner:
    """Runs queued jobs: per model one at a time, oldest first; models in parallel."""

    def __init__(self, store: Store, execute: Callable[[JobRow], None], *, lock_path: Path | None,
                 on_acquire: Callable[[], None] = lambda: None,
                 on_crash: Callable[[str, str], None] | None = None, poll: float = 0.5,
                 max_parallel: int = 8, owner: str | None = None, lease: float = 30.0,
                 on_expired: Callable[[JobRow], None] | None = None) -> None:
        self.store = store
        self.execute = execute
        self.on_crash = on_crash
        self.lock_path = lock_path
        self.on_acquire = on_acquire
        self.poll = poll
        self.max_parallel = max_parallel
        # owner set (and no lock): several replicas, jobs claimed with a lease (see the module docstring)
        self.owner = owner
        self.lease = lease
        self.on_expired = on_expired
        self._running: dict[str, str] = {}      # job id -> model, of the jobs this runner works on
        self._lost: set[str] = set()
        self._renewed = 0.0
        self._busy: set[str] = set()
        self._threads: dict[str, threading.Thread] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._lock_file: IO[str] | None = None
        self._thread: threading.Thread | None = None
        self.is_runner = False
        # starting -> standby (another process runs the jobs) | recovering -> running
        self.phase = "starting"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="gazelle-job-runner", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        """False while this process has not yet found out whether it runs jobs, or is recovering."""
        return self.phase in ("standby", "running")

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def busy(self) -> set[str]:
        with self._cond:
            return set(self._busy)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop dispatching; wait up to ``timeout`` for running jobs; release the lock."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def lost(self, job_id: str) -> bool:
        """Whether this runner's lease on ``job_id`` was taken away."""
        with self._cond:
            return job_id in self._lost

    def _try_lock(self) -> bool:
        if self.lock_path is None:
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.lock_path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f
        return True

    def _main(self) -> None:
        while not self._try_lock():
            self.phase = "standby"
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, timeout=2.0):
                    return
        self.is_runner = True
        self.phase = "recovering"
        if self.owner is None:
            log.info("this process (pid %d) runs the jobs", os.getpid())
        else:
            log.info("this replica (%s) runs jobs it claims, with a %gs lease", self.owner, self.lease)
        try:
            self.on_acquire()
        except Exception:
            log.exception("recovering after a restart failed; jobs run anyway")
        self.phase = "running"
        while True:
            with self._cond:
                if self._stopping:
                    return
            try:
                if self.owner is not None:
                    self._heartbeat()
                self._dispatch()
            except Exception:
                # The database may be briefly unreachable; the next round retries.
                log.exception("dispatching jobs failed")
            with self._cond:
                if self._stopping:
                    return
                self._cond.wait(self.poll)

    def _heartbeat(self) -> None:
        """Renew this replica's leases (noting the lost ones), then fail the jobs of stopped replicas."""
        assert self.owner is not None
        now = time.monotonic()
        if now - self._renewed < self.lease / 3:
            return
        with self._cond:
            mine = list(self._running)
        held = self.store.renew_leases(self.owner, mine, self.lease)
        self._renewed = now
        with self._cond:
            for job_id in set(mine) - held:
                if job_id in self._running and job_id not in self._lost:
                    log.warning("job %s: this replica's lease was taken over; it stops working on it", job_id)
                    self._lost.add(job_id)
        for job in self.store.expired_jobs():
            if job.id in mine:
                continue
            if self.store.take_over(job.id, self.owner, self.lease):
                log.warning("job %s (model %s): the replica running it stopped", job.id, job.model)
                if self.on_expired is not None:
                    self.on_expired(job)

    def _dispatch(self) -> None:
        blocked: set[str] = set()     # models whose oldest queued job this round could not claim
        for job in self.store.jobs(statuses=["queued"], limit=500):
            with self._cond:
                if self._stopping or len(self._busy) >= self.max_parallel:
                    return
                if job.model in self._busy or job.model in blocked:
                    continue
            if not self.store.claim_job(job.id, self.owner, self.lease):
                blocked.add(job.model)
                continue
            with self._cond:
                self._running[job.id] = job.model
                self._busy.add(job.model)
                thread = threading.Thread(target=self._run, args=(job.id, job.model),
                                          name=f"gazelle-job-{job.id}", daemon=True)
                self._threads[job.model] = thread
            thread.start()

    def _end_unfinished(self, job_id: str) -> None:
        """A job ``execute`` returned from without an outcome would hold its model's running slot (the
        database's one-running-job index) for ever: it fails instead."""
        job = self.store.job(job_id)
        if job is None or job.status not in ACTIVE or self.lost(job_id):
            return
        message = "internal error: the job ended without an outcome"
        if self.on_crash is not None:
            self.on_crash(job_id, message)
        else:
            self.store.update_job(job_id, status="failed", finished=time.time(),
                                  error={"stage": job.stage, "message": message, "logs": []})

    def _run(self, job_id: str, model: str) -> None:
        try:
            job = self.store.job(job_id)
            if job is not None:
                self.execute(job)
                self._end_unfinished(job_id)
        except LeaseLost:
            log.warning("job %s: stopped here, another replica owns it now", job_id)
        except Exception:
            error_id = uuid.uuid4().hex[:8]
            log.exception("internal error (id %s): job %s crashed outside its stages", error_id, job_id)
            try:
                job = self.store.job(job_id)
                if job is not None and job.status in ACTIVE and self.on_crash is not None:
                    self.on_crash(job_id, f"internal error (id {error_id})")
            except (Exception, LeaseLost):
                log.exception("could not record the failure of job %s", job_id)
        finally:
            with self._cond:
                self._running.pop(job_id, None)
                self._lost.discard(job_id)
                self._busy.discard(model)
                self._threads.pop(model, None)
                self._cond.notify_all()
