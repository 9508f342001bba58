"""Jobs without processes: the runner's ordering and parallelism, the recorder, and the SSE stream."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable, Iterator


from gazelle.redaction import redact
from gazelle.server.events import EventHub
from gazelle.server.jobs import STAGES, JobRecorder, JobRunner, pending_stages
from gazelle.server.store import JobRow, Store
from gazelle.server.urls import ModelUrls
from tests.unit._server import Server, server, store  # noqa: F401  (fixtures)

WAIT = 20.0


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _queue(store: Store, job_id: str, model: str) -> JobRow:
    return store.create_job(job_id, model, 1, "deploy", pending_stages(STAGES))


class _Work:
    """What the runner executes: records start/end, holds chosen jobs until released."""

    def __init__(self, hold: set[str]) -> None:
        self.trace: list[tuple[str, str]] = []
        self.gates = {job_id: threading.Event() for job_id in hold}
        self.lock = threading.Lock()

    def __call__(self, job: JobRow) -> None:
        with self.lock:
            self.trace.append(("start", job.id))
        gate = self.gates.get(job.id)
        if gate is not None:
            assert gate.wait(WAIT)
        with self.lock:
            self.trace.append(("end", job.id))

    def seen(self, event: str, job_id: str) -> bool:
        with self.lock:
            return (event, job_id) in self.trace


def test_one_job_at_a_time_per_model_in_queue_order_models_in_parallel(store: Store, tmp_path: Path) -> None:
    work = _Work(hold={"a1"})
    for job_id, model in (("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")):
        _queue(store, job_id, model)
    runner = JobRunner(store, work, lock_path=tmp_path / "runner.lock", poll=0.05)
    runner.start()
    try:
        _until(lambda: work.seen("end", "b1"), "model b's job to finish while a1 is held")
        assert work.seen("start", "a1") and not work.seen("end", "a1")
        assert not work.seen("start", "a2"), "a2 started while a1 of the same model was running"
        work.gates["a1"].set()
        _until(lambda: work.seen("end", "a3"), "model a's queue to drain")
        a_events = [e for e in work.trace if e[1].startswith("a")]
        assert a_events == [("start", "a1"), ("end", "a1"), ("start", "a2"), ("end", "a2"),
                            ("start", "a3"), ("end", "a3")]
    finally:
        for gate in work.gates.values():
            gate.set()
        runner.stop()


def test_only_the_lock_holder_runs_jobs_and_another_takes_over(store: Store, tmp_path: Path) -> None:
    first_work, second_work = _Work(hold=set()), _Work(hold=set())
    lock = tmp_path / "runner.lock"
    first = JobRunner(store, first_work, lock_path=lock, poll=0.05)
    second = JobRunner(store, second_work, lock_path=lock, poll=0.05)
    first.start()
    _until(lambda: first.ready, "the first runner to take the lock")
    second.start()
    try:
        _queue(store, "j1", "a")
        _until(lambda: first_work.seen("end", "j1"), "the lock holder to run j1")
        assert not second.is_runner and second_work.trace == []
        first.stop()
        _queue(store, "j2", "a")
        _until(lambda: second_work.seen("end", "j2"), "the second runner to take over")
        assert second.is_runner
    finally:
        first.stop()
        second.stop()


def test_a_job_that_crashes_the_runner_is_recorded_as_an_internal_error(store: Store, tmp_path: Path) -> None:
    hub = EventHub()

    def explode(job: JobRow) -> None:
        raise RuntimeError("secret detail that must stay in the server log")

    def crashed(job_id: str, message: str) -> None:
        job = store.job(job_id)
        assert job is not None
        JobRecorder(store, hub, job, ModelUrls("http://x")).fail("check", message)

    _queue(store, "j1", "a")
    runner = JobRunner(store, explode, lock_path=tmp_path / "runner.lock", on_crash=crashed, poll=0.05)
    runner.start()
    try:
        _until(lambda: store.job("j1").status == "failed", "the crashed job to be failed")  # type: ignore[union-attr]
    finally:
        runner.stop()
    job = store.job("j1")
    assert job is not None and job.error is not None
    assert job.error["message"].startswith("internal error (id ")
    assert "secret detail" not in json.dumps([e.data for e in store.events("j1")])


def test_recorder_writes_stages_logs_error_and_an_end_event(store: Store) -> None:
    job = _queue(store, "j1", "lens")
    rec = JobRecorder(store, EventHub(), job, ModelUrls("http://127.0.0.1:8000"), secrets=["hunter2"])
    rec.start("check")
    rec.done("check", "fine")
    rec.start("build")
    rec.log("pip install --index-url https://user:hunter2@pypi.example/simple six")
    rec.log("Authorization: Bearer gz_abcdefghijklmnopqrstuvwxyz0123")
    rec.fail("build", "pip failed for six==0.0.1 (password hunter2)")
    stored = store.job("j1")
    assert stored is not None and stored.status == "failed" and stored.stage == "build"
    assert stored.error == {"stage": "build", "message": "pip failed for six==0.0.1 (password ***)",
                            "logs": ["pip install --index-url https://***@pypi.example/simple six",
                                     "Authorization: Bearer ***"]}
    assert [s["status"] for s in stored.stages] == ["done", "failed", "pending", "pending", "pending", "pending"]
    events = store.events("j1")
    assert [e.kind for e in events] == ["stage", "stage", "stage", "log", "log", "stage", "end"]
    assert events[-1].data["status"] == "failed" and events[-1].data["error"]["stage"] == "build"
    assert "hunter2" not in json.dumps([e.data for e in events])


def test_redact_scrubs_url_passwords_bearer_tokens_and_known_secrets() -> None:
    line = "postgresql://gazelle:pw@db/g Bearer abc.def gz_0123456789abcdefghijXYZ s3cr3t"
    assert redact(line, ["s3cr3t"]) == "postgresql://***@db/g Bearer *** *** ***"


def _events(chunks: Iterator[bytes], until: str) -> list[tuple[str, dict[str, object]]]:
    """Read SSE chunks until an event named ``until``; [(event, data)]."""
    found: list[tuple[str, dict[str, object]]] = []
    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and
                          not line.startswith(":"))
            if "event" in fields:
                found.append((fields["event"], json.loads(fields["data"])))
                if fields["event"] == until:
                    return found
    return found


def test_event_stream_replays_past_events_then_follows_until_end(server: Server) -> None:
    st = server.state
    job = _queue(st.store, "j1", "lens")
    rec = st.pipeline.recorder(job)
    rec.start("check")
    rec.log("reading the bundle")
    answer = server.client.get("/api/v1/jobs/j1/events", headers=server.headers(), buffered=False)
    assert answer.status_code == 200 and answer.mimetype == "text/event-stream"
    chunks = iter(answer.response)
    past = _events(chunks, until="log")
    assert past == [("stage", {"stage": "check", "status": "running", "message": ""}),
                    ("log", {"stage": "check", "line": "reading the bundle"})]
    later = threading.Thread(target=lambda: (time.sleep(0.2), rec.done("check", "ok"), rec.fail("build", "no")))
    later.start()
    live = _events(chunks, until="end")
    later.join()
    assert [(e, d.get("stage"), d.get("status")) for e, d in live] == [
        ("stage", "check", "done"), ("stage", "build", "failed"), ("end", "build", "failed")]
    assert live[-1][1]["status"] == "failed" and live[-1][1]["id"] == "j1"
    assert list(chunks) == [], "the stream must close after the end event"
    answer.close()


def test_event_stream_resumes_after_last_event_id(server: Server) -> None:
    st = server.state
    job = _queue(st.store, "j1", "lens")
    rec = st.pipeline.recorder(job)
    for stage in ("check", "build"):
        rec.start(stage)
        rec.done(stage)
    rec.succeed()
    ids = [e.id for e in st.store.events("j1")]
    answer = server.client.get("/api/v1/jobs/j1/events",
                               headers={**server.headers(), "Last-Event-ID": str(ids[1])})
    text = answer.get_data(as_text=True)
    assert f"id: {ids[1]}\n" not in text and f"id: {ids[2]}\n" in text
    assert text.count("event: end") == 1
