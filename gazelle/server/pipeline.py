"""The path of one deploy (DESIGN section 4): check -> build -> push -> deploy -> sanity -> live.

Each stage is recorded on the job as it starts and ends. A stage that raises fails the job with the
stage's name and the cause (a ``GazelleError``'s own sentence; anything else is an "internal error
(id X)" whose traceback goes to the server log only). A failure stops the new version if it started and
leaves the previous live version untouched and serving. Only the ``live`` stage changes what the
gateway routes to, in one transaction; the version it replaced keeps running for ``drain_seconds`` (so
requests already routed to it, and routes cached in other server processes, finish) and is then
stopped, still inside the model's job slot, so the next job of that model never races it.

The server never unpickles a model: the check stage reads ``gazelle.json`` and hashes bytes.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

import httpx

from gazelle.errors import BundleError, GazelleError, InsufficientStorage, PayloadTooLarge
from gazelle.names import validate_name
from gazelle.server import upstream
from gazelle.server.artifacts import Artifact, ImageRef, LocalEnv
from gazelle.server.builders import Builder
from gazelle.server.bundlestore import BundleStore, DataDirBundles
from gazelle.server.events import EventHub
from gazelle.server.jobs import JobRecorder, REPLICA_STOPPED, RESTART_MESSAGE
from gazelle.server.routes import RouteTable
from gazelle.server.store import ACTIVE, JobRow, Store, VersionRow
from gazelle.server.targets import Log, Release, Running, Switching, Target
from gazelle.server.urls import ModelUrls

log = logging.getLogger("gazelle.server")

UPLOAD_CHUNK = 1 << 20


def bundle_path(bundles_dir: Path, digest: str) -> Path:
    """Bundles are stored by content: ``sha256:<hex>`` -> ``{bundles_dir}/sha256-<hex>.tar``."""
    algorithm, _, hexdigest = digest.partition(":")
    return bundles_dir / f"{algorithm}-{hexdigest}.tar"


def save_bundle(bundles_dir: Path, source: bytes | IO[bytes], *, limit: int | None = None,
                check: Callable[[Path], None] | None = None) -> tuple[str, Path]:
    """Store a bundle under its digest: ``(digest, path)``.

    ``source`` (bytes, or a stream read in chunks, never whole) is written to a temporary file while it
    is hashed, ``check(temporary path)`` may refuse it, and only then is it renamed into place: never
    half a file, never an unchecked one. More than ``limit`` bytes is ``PayloadTooLarge``; a full disk
    is ``InsufficientStorage``; either way nothing is left behind.
    """
    bundles_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=bundles_dir, prefix=".upload-")
    hasher, size = hashlib.sha256(), 0
    chunks: Iterator[bytes] = iter([source]) if isinstance(source, bytes) else \
        iter(lambda: source.read(UPLOAD_CHUNK), b"")
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise PayloadTooLarge(f"the bundle is larger than this server accepts ({limit} bytes)",
                                              hint="raise GAZELLE_MAX_BUNDLE_BYTES on the server")
                    hasher.update(chunk)
                    f.write(chunk)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(f"no space left on the server to store a bundle of {size} bytes "
                                          "or more", hint="free space in the server's data directory, "
                                          "then send it again") from None
            raise
        if not size:
            raise BundleError("the body is empty: send the bundle tar (gazelle.save writes one)")
        if check is not None:
            check(Path(tmp))
        digest = "sha256:" + hasher.hexdigest()
        path = bundle_path(bundles_dir, digest)
        if path.exists() and path.stat().st_size == size:
            Path(tmp).unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest, path


# What the push stage runs: the builder's artifact, the model's name and version in; the pushed,
# digest-pinned reference out. Wiring composes it from a registry (or the Docker engine).
Publish = Callable[[Any, str, int, Log], ImageRef]


def _release(version: VersionRow, artifact: Artifact, manifest: Mapping[str, Any]) -> Release:
    """What a target runs for a stored version: its artifact, with the settings it was deployed with."""
    return Release(name=version.model, version=version.version, artifact=artifact, manifest=manifest,
                   public=version.public, replicas=version.replicas, resources=version.resources)


class StageFailed(Exception):
    def __init__(self, stage: str, message: str, logs: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.logs = list(logs)


class Pipeline:
    """Runs the jobs of one server: deploys (and rollbacks, which redeploy a stored version) and deletes."""

    def __init__(self, store: Store, hub: EventHub, builder: Builder, target: Target, routes: RouteTable, *,
                 bundles_dir: Path, urls: ModelUrls, publish: Publish | None = None, drain_seconds: float = 2.0,
                 stop_grace: float = 10.0, sanity_timeout: float = 60.0,
                 stage_delay: Mapping[str, float] | None = None, secrets: Sequence[str] = (),
                 bundles: BundleStore | None = None, runtime_token: str | None = None) -> None:
        # Sent with the sanity check: a private model's runtime answers only a token it was given.
        self._sanity_headers = {"Authorization": f"Bearer {runtime_token}"} if runtime_token else {}
        self.store = store
        self.bundles = bundles or DataDirBundles()
        self.hub = hub
        self.builder = builder
        self.target = target
        self.routes = routes
        self.bundles_dir = bundles_dir
        self.urls = urls
        self.publish = publish
        self.drain_seconds = drain_seconds
        self.stop_grace = stop_grace
        self.sanity_timeout = sanity_timeout
        self.stage_delay = dict(stage_delay or {})
        self.secrets = tuple(secrets)
        # Set by the app to its runner's ``lost``: a job whose lease this replica lost is not ours.
        self.lease_lost: Callable[[str], bool] = lambda job_id: False

    def recorder(self, job: JobRow) -> JobRecorder:
        return JobRecorder(self.store, self.hub, job, self.urls, self.secrets, lost=self.lease_lost)

    def replica_stopped(self, job: JobRow) -> None:
        """Fail a job whose replica stopped mid-way (this replica took its expired lease over)."""
        self.recorder(job).fail(job.stage or job.stages[0]["name"], REPLICA_STOPPED)
        if job.version is not None:
            version = self.store.version(job.model, job.version)
            if version is not None and version.status == "deploying":
                self.store.update_version(job.model, job.version, status="failed", url=None)
        self.routes.invalidate(job.model)

    # -- running jobs ------------------------------------------------------------------------------

    def run(self, job: JobRow) -> None:
        """Execute one claimed job to its end (never raises for a stage's failure)."""
        rec = self.recorder(job)
        if job.kind == "delete":
            self._delete(job, rec)
        else:
            self._deploy(job, rec)

    def fail_job(self, job_id: str, message: str) -> None:
        """Record a failure that happened outside any stage (the runner calls this)."""
        job = self.store.job(job_id)
        if job is not None and job.status in ACTIVE:
            self.recorder(job).fail(job.stage or job.stages[0]["name"], message)

    @contextmanager
    def _stage(self, rec: JobRecorder, name: str) -> Iterator[None]:
        """Run a stage: marked running, then done (unless the body marked it done or skipped itself)."""
        rec.start(name)
        delay = self.stage_delay.get(f"{rec.model}:{name}", self.stage_delay.get(name))
        if delay:
            time.sleep(delay)
        try:
            yield
        except StageFailed:
            raise
        except GazelleError as err:
            logs = err.detail.splitlines()[-20:] if err.detail else []
            raise StageFailed(name, str(err), logs) from err
        except Exception as err:
            error_id = uuid.uuid4().hex[:8]
            log.exception("internal error (id %s) in job %s, stage %s", error_id, rec.job_id, name)
            raise StageFailed(name, f"internal error (id {error_id})") from err
        if rec.status_of(name) == "running":
            rec.done(name)

    def _deploy(self, job: JobRow, rec: JobRecorder) -> None:
        name = job.model
        version = self.store.version(name, job.version) if job.version is not None else None
        if version is None:
            rec.fail("check", f"model {name} version {job.version} does not exist any more")
            return
        number = version.version
        started = False
        previous: int | None = None
        try:
            with self._stage(rec, "check"):
                manifest, path = self._check(version, rec)
            artifact: Artifact
            if isinstance(version.artifact, ImageRef):
                # A rollback, or a retry after a later stage failed: the image is in the registry already.
                artifact = version.artifact
                rec.skip("build", f"version {number} was built before: {artifact}")
                rec.skip("push", f"{artifact} is in the registry")
            else:
                artifact = self._build(name, number, path, manifest, rec)
            self.store.update_version(name, number, artifact=artifact)
            with self._stage(rec, "deploy"):
                started = True
                release = _release(version, artifact, manifest)
                running = self.target.deploy(release, rec.log)
                self.store.update_version(name, number, url=running.url)
                rec.done("deploy", f"version {number} answers at {running.url}")
            with self._stage(rec, "sanity"):
                verdict = self._sanity(name, number, running.url, manifest, rec)
                if verdict is None:
                    rec.skip("sanity", "the bundle has no sample to check")
                else:
                    rec.done("sanity", verdict)
            with self._stage(rec, "live"):
                if isinstance(self.target, Switching):
                    self.target.switch(name, number)
                previous = self.store.switch_live(name, number)
                self.routes.invalidate(name)
                rec.done("live", f"version {number} is live at {self.urls.model(name)}"
                         + (f"; version {previous} stops in {self.drain_seconds:g}s" if previous else ""))
        except StageFailed as failure:
            if started:
                self._stop_quietly(name, number, grace=0.0)
            self.store.update_version(name, number, status="failed", url=None)
            self.routes.invalidate(name)
            rec.fail(failure.stage, failure.message, failure.logs)
            return
        rec.succeed()
        if previous is not None:
            self._retire(name, previous)

    def _build(self, name: str, number: int, path: Path, manifest: Mapping[str, Any],
               rec: JobRecorder) -> Artifact:
        with self._stage(rec, "build"):
            built = self.builder.build(path, manifest, rec.log, version=number)
        if self.publish is None:
            if not isinstance(built, LocalEnv):   # wiring never pairs these; say so rather than guess
                raise StageFailed("push", f"the build made {type(built).__name__}, which needs a registry "
                                          "to be pushed to; none is configured")
            rec.skip("push", "this target runs the build in place; nothing to push")
            return built
        with self._stage(rec, "push"):
            pushed = self.publish(built, name, number, rec.log)
            rec.done("push", f"pushed {pushed}")
        return pushed

    def _check(self, version: VersionRow, rec: JobRecorder) -> tuple[Mapping[str, Any], Path]:
        from gazelle.bundle import read_manifest

        path = bundle_path(self.bundles_dir, version.digest)
        if not self.bundles.fetch(version.digest, path):
            raise BundleError(f"the stored bundle {path.name} is missing from the server's data directory")
        # One open file for the digest and the manifest's checks, read in chunks: a bundle may be larger
        # than the server's memory.
        with open(path, "rb") as f:
            digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
            if digest != version.digest:
                raise BundleError(f"the stored bundle {path.name} changed on disk (its digest is now {digest})")
            f.seek(0)
            manifest = read_manifest(f)
        if validate_name(manifest.get("name")) != version.model:
            raise BundleError(f"the bundle is for model {manifest.get('name')!r}, not {version.model!r}")
        pins = manifest.get("requirements") or []
        rec.done("check", f"bundle {digest[:19]}..., python {manifest.get('python')}, {len(pins)} pins")
        return manifest, path

    def _sanity(self, name: str, number: int, url: str, manifest: Mapping[str, Any],
                rec: JobRecorder) -> str | None:
        """None if there is nothing to check, else a sentence saying what matched."""
        sample, expected = manifest.get("sample"), manifest.get("expected")
        if not sample:
            return None
        from gazelle.schema.comparison import compare

        rec.log(f"POST /predict to version {number} with the {len(sample)} sample row(s)")
        try:
            answer = upstream.client(url).post(upstream.http_url(url, "/predict"), json={"instances": sample},
                                               headers=self._sanity_headers, timeout=self.sanity_timeout)
        except httpx.HTTPError as err:
            raise StageFailed("sanity", f"version {number} did not answer the sample: {err}",
                              self._tail(name, number)) from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code != 200 or not isinstance(body, dict) or "predictions" not in body:
            problem = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(
                body.get("error"), dict) else answer.text[:300]
            raise StageFailed("sanity", f"version {number} answered the sample with HTTP "
                                        f"{answer.status_code}: {problem}", self._tail(name, number))
        if expected is None:
            return f"version {number} answered the {len(sample)} sample row(s)"
        difference = compare(body["predictions"], expected)
        if difference is not None:
            raise StageFailed("sanity", f"version {number} answers the sample differently from the notebook: "
                                        f"{difference}")
        return f"version {number} answered the {len(sample)} sample row(s) as the notebook did"

    def _tail(self, name: str, number: int) -> list[str]:
        try:
            return self.target.logs(name, number, tail=20)
        except Exception:
            return []

    def _retire(self, name: str, version: int) -> None:
        time.sleep(self.drain_seconds)
        self._stop_quietly(name, version, grace=self.stop_grace)
        current = self.store.version(name, version)
        if current is not None and current.status == "ready":
            self.store.update_version(name, version, status="retired", url=None)
        self.routes.invalidate(name)

    def _stop_quietly(self, name: str, version: int, *, grace: float) -> None:
        try:
            self.target.stop(name, version, grace=grace)
        except Exception:
            log.exception("could not stop model %s version %d", name, version)

    def _delete(self, job: JobRow, rec: JobRecorder) -> None:
        try:
            with self._stage(rec, "delete"):
                self.target.delete(job.model)
                for digest in self.store.delete_model(job.model):
                    bundle_path(self.bundles_dir, digest).unlink(missing_ok=True)
                    self.bundles.delete(digest)
                self.routes.invalidate(job.model)
                rec.done("delete", f"model {job.model} and its versions are gone")
        except StageFailed as failure:
            rec.fail(failure.stage, failure.message, failure.logs)
            return
        rec.succeed()

    # -- after a restart ---------------------------------------------------------------------------

    def _fail_orphans(self, boot_time: float) -> set[tuple[str, int | None]]:
        """Fail the jobs a dead runner left behind and the versions they were deploying; the jobs left."""
        for job in self.store.jobs(statuses=ACTIVE, limit=10_000):
            if job.status == "running" or job.created < boot_time:
                log.warning("job %s (model %s) was interrupted by a restart", job.id, job.model)
                self.recorder(job).fail(job.stage or job.stages[0]["name"], RESTART_MESSAGE)
        active = {(j.model, j.version) for j in self.store.jobs(statuses=ACTIVE, limit=10_000)}
        for v in self.store.versions_with_status("deploying"):
            if (v.model, v.version) not in active:
                self.store.update_version(v.model, v.version, status="failed", url=None)
        return active

    def _sweep(self, wanted: set[tuple[str, int | None]]) -> None:
        """Stop what the target runs that is neither live nor some job's; retire stale ``ready`` rows."""
        for running in self.target.running():
            if (running.name, running.version) not in wanted:
                self._stop_quietly(running.name, running.version, grace=self.stop_grace)
        for v in self.store.versions_with_status("ready"):
            self.store.update_version(v.model, v.version, status="retired", url=None)

    def recover(self, boot_time: float, *, shared: bool = False) -> None:
        """Fail the jobs a dead runner left behind, then bring back every live version.

        Running jobs are orphans by definition (only the lock holder runs jobs). Queued ones are failed
        only if they predate this server's start; later ones were queued by a sibling process and run.
        ``shared``: several replicas run jobs; theirs are not orphans (an expired lease is how one is
        found, see ``jobs``), so only the live versions are brought back, and nothing is swept.
        """
        active = None if shared else self._fail_orphans(boot_time)
        live = self.store.live_versions()
        releases = [_release(v, v.artifact, v.manifest) for v in live if v.artifact is not None]
        if releases:
            log.info("restoring %d live version(s): %s", len(releases),
                     ", ".join(f"{r.name} v{r.version}" for r in releases))
        # Until its own runtime answers, each model's URL says "restoring" (503, Retry-After), never 502.
        for r in releases:
            self.store.update_version(r.name, r.version, status="restoring")
        self.routes.invalidate()

        def ready(running: Running) -> None:
            self.store.update_version(running.name, running.version, status="live", url=running.url)
            self.routes.invalidate(running.name)

        # Always asked, even with nothing live: restore is also where a target finds the runtimes a
        # previous server left behind, so that the sweep below can stop the ones no longer wanted.
        back = {(r.name, r.version) for r in self.target.restore(
            releases, lambda line: log.info("restore: %s", line), on_ready=ready)}
        for r in releases:
            if (r.name, r.version) not in back:
                log.error("model %s version %d could not be restored", r.name, r.version)
                self.store.update_version(r.name, r.version, status="down", url=None)
        # Shared: a replica starting does not sweep the target; a version another replica is switching
        # to or draining is not "unwanted" (the job that replaced it stops it).
        if active is not None:
            self._sweep({(v.model, v.version) for v in live} | active)
        self.routes.invalidate()
